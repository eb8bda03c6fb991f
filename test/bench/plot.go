package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	ms2mColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	coldColor = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	// matplotlib's orange, green and grey, after its blue and red.
	stopAndCopyColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	pauseColor       = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	sumColor         = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
)

// downtimeFloor keeps a zero downtime on the logarithmic axis.
const downtimeFloor = 0.1 // ms

// plot draws downtime (log scale) and total time against rate, medians
// with the runs' range as error bars, MS2M and its baselines side by side.
func plot(t table, path string) error {
	downtime := func(r result) time.Duration { return r.Downtime }
	total := func(r result) time.Duration { return r.Total }
	each := func(f func(result) time.Duration) []series {
		return []series{{ms2m.Name, "MS2M", ms2mColor, f}, {stopAndCopy.Name, "stop-and-copy", stopAndCopyColor, f},
			{cold.Name, "restart-and-rebuild", coldColor, f}}
	}
	left, err := panel(t, "Downtime (no live processing)", "downtime (ms, log scale)", each(downtime), 1e3, true)
	if err != nil {
		return err
	}
	middle, err := panel(t, "MS2M's downtime, stall by stall", "stall (ms)", []series{
		{ms2m.Name, "checkpoint pause", pauseColor, func(r result) time.Duration { return r.PauseStall }},
		{ms2m.Name, "handover", ms2mColor, func(r result) time.Duration { return r.HandoverStall }},
		{ms2m.Name, "downtime (their sum)", sumColor, downtime},
	}, 1e3, false)
	if err != nil {
		return err
	}
	right, err := panel(t, "Total migration time", "total (s)", each(total), 1, false)
	if err != nil {
		return err
	}
	const w, h = 16 * vg.Inch, 4.5 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(100))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 3, PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := gplot.Align([][]*gplot.Plot{{left, middle, right}}, tiles, dc)
	left.Draw(canvases[0][0])
	middle.Draw(canvases[0][1])
	right.Draw(canvases[0][2])
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// series is one line of a panel: a figure of one method's runs.
type series struct {
	method, label string
	c             color.Color
	f             func(result) time.Duration
}

// panel is one figure; unitsPerSecond scales durations (1e3: ms, 1: s).
func panel(t table, title, ylabel string, lines []series, unitsPerSecond float64, logY bool) (*gplot.Plot, error) {
	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = "message rate (msg/s)"
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	if logY {
		p.Y.Scale = gplot.LogScale{}
		p.Y.Tick.Marker = gplot.LogTicks{Prec: -1}
	}
	p.Legend.Top, p.Legend.Left = true, true
	var ticks []gplot.Tick
	for _, r := range t.Rates {
		ticks = append(ticks, gplot.Tick{Value: r, Label: fmt.Sprintf("%g", r)})
	}
	p.X.Tick.Marker = gplot.ConstantTicks(ticks)
	yLo, yHi := math.Inf(1), 0.0
	for _, m := range lines {
		var pts plotter.XYs
		var errs plotter.YErrors
		for _, rate := range t.Rates {
			c := t.cell(rate, m.method)
			if len(c.OK) == 0 {
				continue
			}
			s := c.stat(m.f)
			y := s.Median.Seconds() * unitsPerSecond
			lo, hi := s.Min.Seconds()*unitsPerSecond, s.Max.Seconds()*unitsPerSecond
			if logY {
				y, lo, hi = max(y, downtimeFloor), max(lo, downtimeFloor), max(hi, downtimeFloor)
			}
			yLo, yHi = math.Min(yLo, lo), math.Max(yHi, hi)
			pts = append(pts, plotter.XY{X: rate, Y: y})
			errs = append(errs, struct{ Low, High float64 }{y - lo, hi - y})
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.label, err)
		}
		line.Color, points.Color = m.c, m.c
		line.Width = vg.Points(1.5)
		points.Shape = draw.CircleGlyph{}
		bars, err := plotter.NewYErrorBars(struct {
			plotter.XYer
			plotter.YErrorer
		}{pts, errs})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.label, err)
		}
		bars.Color = m.c
		p.Add(line, points, bars)
		p.Legend.Add(m.label, line, points)
	}
	if yHi > 0 {
		// Room above the lines for the legend.
		if logY {
			p.Y.Min = math.Pow(10, math.Floor(math.Log10(yLo)))
			p.Y.Max = math.Pow(10, math.Ceil(math.Log10(yHi))+1)
		} else {
			step := niceStep(yHi * 1.35 / 5)
			p.Y.Min, p.Y.Max = 0, math.Ceil(yHi*1.35/step)*step
			var ticks []gplot.Tick
			for v := 0.0; v <= p.Y.Max+step/2; v += step {
				ticks = append(ticks, gplot.Tick{Value: v, Label: fmt.Sprintf("%g", v)})
			}
			p.Y.Tick.Marker = gplot.ConstantTicks(ticks)
		}
	}
	if len(t.Rates) > 0 {
		p.X.Min, p.X.Max = 0, t.Rates[len(t.Rates)-1]*1.05
	}
	return p, nil
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
