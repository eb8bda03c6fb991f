package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ms2m/ms2m/internal/expect"
	"github.com/ms2m/ms2m/internal/testenv"
)

func TestOptionsFromEnvNamesTheVariable(t *testing.T) {
	valid := map[string]string{
		EnvBrokers: "kafka:9092", EnvTopic: "orders", EnvGroup: "g", EnvAppPort: "8080", EnvPodIP: "127.0.0.5",
		EnvPodNamespace: "shop", EnvPodUID: "1234",
	}
	o, err := OptionsFromEnv(func(k string) string { return valid[k] })
	if err != nil {
		t.Fatal(err)
	}
	if o.AppURL != "http://127.0.0.5:8080/messages" || o.ControlAddr != "127.0.0.5:9901" || o.ReplayFrom != nil || o.BatchSize != 1 || o.Standby ||
		o.ControlAudience != "ms2m-replay/shop/1234" {
		t.Fatalf("options = %+v", o)
	}
	for _, tc := range []struct{ name, key, value, want string }{
		{"no brokers", EnvBrokers, "", EnvBrokers},
		{"bad app port", EnvAppPort, "http", EnvAppPort},
		{"bad pod ip", EnvPodIP, "localhost", EnvPodIP},
		{"bad control port", EnvControlPort, "99999", EnvControlPort},
		{"bad replay offsets", EnvReplayFrom, `{"a":1}`, EnvReplayFrom},
		{"negative replay offset", EnvReplayFrom, `{"0":-1}`, EnvReplayFrom},
		{"batch size zero", EnvAppBatchSize, "0", EnvAppBatchSize},
		{"batch size too large", EnvAppBatchSize, "100000", EnvAppBatchSize},
		{"standby typo", EnvStandby, "yes", EnvStandby},
		{"no pod UID (the control API's audience)", EnvPodUID, "", EnvPodUID},
		{"no namespace", EnvPodNamespace, "", EnvPodNamespace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range valid {
				env[k] = v
			}
			env[tc.key] = tc.value
			_, err := OptionsFromEnv(func(k string) string { return env[k] })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want one naming %s", err, tc.want)
			}
		})
	}
	env := map[string]string{EnvReplayFrom: `{"0":12,"3":7}`}
	for k, v := range valid {
		env[k] = v
	}
	o, err = OptionsFromEnv(func(k string) string { return env[k] })
	if err != nil || o.ReplayFrom[0] != 12 || o.ReplayFrom[3] != 7 {
		t.Fatalf("replay offsets = %v (%v)", o.ReplayFrom, err)
	}
	env[EnvStandby] = "true"
	if _, err := OptionsFromEnv(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), EnvStandby) {
		t.Fatalf("standby with replay offsets: err = %v; want one naming %s", err, EnvStandby)
	}
	delete(env, EnvReplayFrom)
	env[EnvAppBatchSize] = "64"
	o, err = OptionsFromEnv(func(k string) string { return env[k] })
	if err != nil || !o.Standby || o.BatchSize != 64 {
		t.Fatalf("standby with batches of 64: %+v (%v)", o, err)
	}
}

// Pods of one name in two namespaces, consuming in one group, are two
// static members: the instance id is qualified by the namespace, in the
// characters Kafka allows, and within its length.
func TestInstanceIDIsUniqueAcrossNamespaces(t *testing.T) {
	env := func(ns string) func(string) string {
		m := map[string]string{EnvBrokers: "kafka:9092", EnvTopic: "orders", EnvGroup: "g", EnvAppPort: "8080", EnvPodIP: "127.0.0.5",
			EnvGroupInstanceID: "orders-0", EnvPodNamespace: ns, EnvPodUID: "1234"}
		return func(k string) string { return m[k] }
	}
	staging, err1 := OptionsFromEnv(env("staging"))
	prod, err2 := OptionsFromEnv(env("prod"))
	if err1 != nil || err2 != nil || staging.GroupInstanceID == prod.GroupInstanceID || staging.GroupInstanceID != "orders-0_staging" {
		t.Fatalf("instance ids %q and %q (%v, %v): want orders-0_staging and another", staging.GroupInstanceID, prod.GroupInstanceID, err1, err2)
	}
	long := InstanceID(strings.Repeat("p", 253), strings.Repeat("n", 63))
	if len(long) != 249 || long == InstanceID(strings.Repeat("p", 253), strings.Repeat("m", 63)) {
		t.Fatalf("a long id: %d characters, not unique", len(long))
	}
	if InstanceID("", "ns") != "" {
		t.Fatal("no pod name must stay a dynamic member")
	}
}

// The mode the controller recorded on the pod wins over how the sidecar
// was first configured: a restored pod handed over consumes live although
// its environment still names the checkpoint offsets; a fenced source
// stays out of the group.
func TestModeFromThePodWinsAfterARestart(t *testing.T) {
	env := map[string]string{
		EnvBrokers: "kafka:9092", EnvTopic: "orders", EnvGroup: "g", EnvAppPort: "8080", EnvPodIP: "127.0.0.5",
		EnvPodNamespace: "shop", EnvPodUID: "1234", EnvReplayFrom: `{"0":12}`,
	}
	get := func(k string) string { return env[k] }
	env[EnvMode] = "live"
	if o, err := OptionsFromEnv(get); err != nil || o.ReplayFrom != nil || o.Fenced || o.Standby {
		t.Fatalf("handed over: %+v (%v); want live", o, err)
	}
	env[EnvMode] = "fenced"
	if o, err := OptionsFromEnv(get); err != nil || o.ReplayFrom != nil || !o.Fenced {
		t.Fatalf("fenced: %+v (%v); want fenced", o, err)
	}
	env[EnvMode] = "paused"
	if _, err := OptionsFromEnv(get); err == nil || !strings.Contains(err.Error(), EnvMode) {
		t.Fatalf("unknown mode: err = %v; want one naming %s", err, EnvMode)
	}
}

type denyAll struct{}

func (denyAll) Authenticate(context.Context, string) (Identity, error) {
	return Identity{}, errors.New("no")
}

// TestSidecarDeliversAndExposesReadinessAndMetrics runs the whole sidecar
// (engine, control API, metrics) against the broker and an app.
func TestSidecarDeliversAndExposesReadinessAndMetrics(t *testing.T) {
	b := startBroker(t, 1)
	a := newApp()
	app := httptest.NewServer(a)
	t.Cleanup(app.Close)
	o := Options{Brokers: []string{b.addr}, Topic: topic, Group: "sidecar", AppURL: app.URL,
		ControlAddr: testenv.FreeAddr(t), MetricsAddr: testenv.FreeAddr(t), AllowedUsers: []string{DefaultAllowedUser}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, denyAll{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar stopped with %v", err)
		}
	})
	b.produce(t, 0, 5)
	expectExactly(t, a, 5)

	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	expect.Eventually(t, "ready and counted", func() error {
		if code, _ := get("http://" + o.ControlAddr + "/readyz"); code != 200 {
			return fmt.Errorf("/readyz = %d", code)
		}
		_, body := get("http://" + o.MetricsAddr + "/metrics")
		for _, want := range []string{"ms2m_replay_messages_delivered_total 5", `ms2m_replay_mode{mode="live"} 1`, `ms2m_replay_mode{mode="replay"} 0`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("metrics lack %s", want)
			}
		}
		return nil
	})
	if code, _ := get("http://" + o.ControlAddr + "/position"); code != http.StatusUnauthorized {
		t.Errorf("unauthenticated /position = %d, want 401", code)
	}
}
