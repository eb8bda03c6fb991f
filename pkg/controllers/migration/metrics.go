package migration

import (
	"github.com/prometheus/client_golang/prometheus"

	v1 "github.com/ms2m/ms2m/pkg/apis/migration/v1alpha1"
)

// Metrics are the controller's Prometheus metrics.
type Metrics struct {
	Migrations      *prometheus.CounterVec
	PhaseSeconds    *prometheus.HistogramVec
	DowntimeSeconds prometheus.Histogram
	PauseSeconds    prometheus.Histogram
	HandoverSeconds prometheus.Histogram
	CheckpointBytes prometheus.Histogram
	ReplayLag       *prometheus.GaugeVec
	// ReplayRate and ArrivalRate are μ and λ, which the cutover weighs.
	ReplayRate  *prometheus.GaugeVec
	ArrivalRate *prometheus.GaugeVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Migrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ms2m_migrations_total", Help: "Finished migrations by result (completed, failed) and trigger (user, evacuation).",
		}, []string{"result", "trigger"}),
		PhaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ms2m_migration_phase_duration_seconds", Help: "Time spent in each phase.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}, []string{"phase"}),
		DowntimeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ms2m_migration_downtime_seconds", Help: "A migration's stalls of live processing, summed: the checkpoint pause and the handover, as the sidecars measured them.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		PauseSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ms2m_migration_checkpoint_pause_seconds", Help: "How long the source's sidecar held deliveries for the checkpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		HandoverSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ms2m_migration_handover_stall_seconds", Help: "From the source's fence to the target live at it, as the two sidecars measured it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		CheckpointBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ms2m_checkpoint_size_bytes", Help: "Size of the checkpoint image layer.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 12),
		}),
		ReplayLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ms2m_migration_replay_lag_messages", Help: "Messages the replaying target is behind.",
		}, []string{"namespace", "migration"}),
		ReplayRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ms2m_migration_replay_rate_messages_per_second", Help: "μ: messages per second the replaying target applies, as last sampled.",
		}, []string{"namespace", "migration"}),
		ArrivalRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ms2m_migration_arrival_rate_messages_per_second", Help: "λ: messages per second the source processes live while the target replays, as last sampled.",
		}, []string{"namespace", "migration"}),
	}
	reg.MustRegister(m.Migrations, m.PhaseSeconds, m.DowntimeSeconds, m.PauseSeconds, m.HandoverSeconds, m.CheckpointBytes, m.ReplayLag, m.ReplayRate, m.ArrivalRate)
	return m
}

func (r *Reconciler) countResult(m *v1.StatefulMigration, result string) {
	if r.Metrics == nil {
		return
	}
	trigger := m.Labels[v1.LabelTrigger]
	if trigger == "" {
		trigger = "user"
	}
	r.Metrics.Migrations.WithLabelValues(result, trigger).Inc()
	r.Metrics.ReplayLag.DeleteLabelValues(m.Namespace, m.Name)
	r.Metrics.ReplayRate.DeleteLabelValues(m.Namespace, m.Name)
	r.Metrics.ArrivalRate.DeleteLabelValues(m.Namespace, m.Name)
}
