package plugin

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imagegate/imagegate/cache"
)

// verdict is what a decision did to a create, as logged and counted.
type verdict int

const (
	allow verdict = iota
	deny
	// warn and audit allow an image that failed a rule in that mode.
	warn
	audit
	numVerdicts
)

var verdictNames = [numVerdicts]string{"allow", "deny", "warn", "audit"}

func (v verdict) String() string { return verdictNames[v] }

// metrics are the plugin's Prometheus metrics, in a registry of their own so
// that nothing another package registers globally leaks onto the endpoint.
type metrics struct {
	reg *prometheus.Registry

	decisions       *prometheus.CounterVec
	cacheLookups    [cache.Stale + 1]prometheus.Counter
	verifyDuration  prometheus.Histogram
	registryErrors  prometheus.Counter
	policyInfo      *prometheus.GaugeVec
	reloadFailures  prometheus.Counter
	internalErrors  prometheus.Counter
	nriConnected    prometheus.Gauge
	nriConnectCount prometheus.Counter
}

func newMetrics(cacheLen func() int) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imagegate_decisions_total",
			Help: "Container create decisions by verdict (allow, deny, warn, audit) and rule (empty: no rule matched).",
		}, []string{"verdict", "rule"}),
		verifyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imagegate_verification_duration_seconds",
			Help:    "Duration of verifications against the registry (cache misses only).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2.5, 5},
		}),
		registryErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_registry_errors_total",
			Help: "Verifications that failed because the registry could not be reached or read.",
		}),
		policyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "imagegate_policy_info",
			Help: "The policy generation in force (value 1).",
		}, []string{"generation"}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_policy_reload_failures_total",
			Help: "Policy reloads refused because the new policy was invalid; the last good one stayed.",
		}),
		internalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_internal_errors_total",
			Help: "Decisions that panicked and were turned into denials.",
		}),
		nriConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "imagegate_nri_connected",
			Help: "1 while registered with the runtime's NRI, 0 otherwise.",
		}),
		nriConnectCount: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imagegate_nri_registrations_total",
			Help: "Registrations with the runtime's NRI; more than one means the runtime restarted or dropped the plugin.",
		}),
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imagegate_cache_lookups_total",
		Help: "Verdict cache look-ups by outcome: hit, miss, shared (joined a verification in flight), stale (served within grace while the registry failed).",
	}, []string{"outcome"})
	// Resolved once: a label look-up per decision would cost the hot path.
	for o := cache.Hit; o <= cache.Stale; o++ {
		m.cacheLookups[o] = lookups.WithLabelValues(o.String())
	}
	m.reg.MustRegister(
		m.decisions, lookups, m.verifyDuration, m.registryErrors, m.policyInfo,
		m.reloadFailures, m.internalErrors, m.nriConnected, m.nriConnectCount,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imagegate_cache_entries",
			Help: "Verdicts held in the cache, expired ones included until evicted.",
		}, func() float64 { return float64(cacheLen()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ruleCounters returns the decision counters of rule, by verdict.
func (m *metrics) ruleCounters(rule string) *[numVerdicts]prometheus.Counter {
	var cs [numVerdicts]prometheus.Counter
	for v, name := range verdictNames {
		cs[v] = m.decisions.WithLabelValues(name, rule)
	}
	return &cs
}
