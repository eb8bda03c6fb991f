package replay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sidecar's Prometheus metrics.
type Metrics struct {
	Delivered prometheus.Counter
	Replayed  prometheus.Counter
	AppErrors prometheus.Counter
	// DeadLettered counts messages the app refused for good: written to
	// the dead-letter topic (live) or passed over (replaying).
	DeadLettered prometheus.Counter
	// Rewinds counts the app's requests to be given again what it lost
	// (a restored container restarted from its checkpoint image).
	Rewinds      prometheus.Counter
	KafkaErrors  prometheus.Counter
	PauseSeconds prometheus.Histogram
	FenceSeconds prometheus.Histogram
	// Mode is 1 for the sidecar's current mode (live, replay, fenced,
	// standby), 0 for the others.
	Mode *prometheus.GaugeVec
	// Lag is the replay lag last sampled through the control API.
	Lag prometheus.Gauge
	// GroupGeneration and AssignedPartitions are a static member's group
	// generation and partition count as of its last join: a replica whose
	// generation does not move was not rebalanced.
	GroupGeneration    prometheus.Gauge
	AssignedPartitions prometheus.Gauge
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	lat := []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 5}
	m := &Metrics{
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_messages_delivered_total",
			Help: "Messages the app acknowledged, live and replayed."}),
		Replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_messages_replayed_total",
			Help: "Messages the app acknowledged as replay (marked with the Ms2m-Replay header)."}),
		AppErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_app_errors_total",
			Help: "Delivery attempts the app failed or refused; each is retried."}),
		DeadLettered: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_messages_dead_lettered_total",
			Help: "Messages the app refused on every attempt: written to the dead-letter topic, then committed."}),
		Rewinds: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_rewinds_total",
			Help: "Times the app asked for messages again because it lost state (409 with Ms2m-Next-Offset), and was given them as replay."}),
		KafkaErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ms2m_replay_kafka_errors_total",
			Help: "Fetches and commits that failed (broker unreachable, rebalance); each is retried."}),
		PauseSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ms2m_replay_pause_duration_seconds",
			Help: "Time from a pause request to the in-flight message being acknowledged.", Buckets: lat}),
		FenceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ms2m_replay_fence_duration_seconds",
			Help: "Time from a fence request to the fence offsets being reported.", Buckets: lat}),
		Mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ms2m_replay_mode",
			Help: "1 for the sidecar's current mode, 0 for the others."}, []string{"mode"}),
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ms2m_replay_lag_messages",
			Help: "Messages between a replaying target and the live member's position (or the fence), as last sampled."}),
		GroupGeneration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ms2m_replay_group_generation",
			Help: "The consumer group's generation at the static member's last join (0: not a static member, or not joined)."}),
		AssignedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ms2m_replay_assigned_partitions",
			Help: "Partitions the group assigned the static member at its last join."}),
	}
	reg.MustRegister(m.Delivered, m.Replayed, m.AppErrors, m.DeadLettered, m.Rewinds, m.KafkaErrors, m.PauseSeconds, m.FenceSeconds, m.Mode, m.Lag,
		m.GroupGeneration, m.AssignedPartitions)
	return m
}

// setMode records the engine's mode; a nil Metrics records nothing.
func (m *Metrics) setMode(mode Mode) {
	if m == nil {
		return
	}
	for _, k := range []Mode{ModeLive, ModeReplay, ModeFenced, ModeStandby, ModeAborted} {
		v := 0.0
		if k == mode {
			v = 1
		}
		m.Mode.WithLabelValues(string(k)).Set(v)
	}
}

// observe records the time since start in the histogram pick chooses; a nil
// Metrics records nothing.
func (m *Metrics) observe(pick func(*Metrics) prometheus.Histogram, start time.Time) {
	if m != nil {
		pick(m).Observe(time.Since(start).Seconds())
	}
}

func pauseSeconds(m *Metrics) prometheus.Histogram { return m.PauseSeconds }
func fenceSeconds(m *Metrics) prometheus.Histogram { return m.FenceSeconds }

// joined records a static member's join.
func (m *Metrics) joined(generation int, assigned []int) {
	if m == nil {
		return
	}
	m.GroupGeneration.Set(float64(generation))
	m.AssignedPartitions.Set(float64(len(assigned)))
}
