// Command example-verifier checks a run of the example workload: every
// message of the input topic processed live exactly once (the effects
// topic), and the consumer's state equal to the fold of the input (each
// replica's, of its partitions, for a consumer of several replicas). It
// exits 1 when anything was lost, duplicated or corrupted.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ms2m/ms2m/examples/statefulapp"
)

func main() {
	brokers := flag.String("brokers", os.Getenv("BROKERS"), "Comma-separated host:port list (env BROKERS).")
	topic := flag.String("topic", os.Getenv("TOPIC"), "Input topic (env TOPIC).")
	effects := flag.String("effects-topic", os.Getenv("EFFECTS_TOPIC"), "Effects topic the consumer writes (env EFFECTS_TOPIC).")
	consumer := flag.String("consumer", "", "Base URL of the consumer (http://POD_IP:8080) to check its state digest, or a comma-separated list with one per replica of a consumer group (each holds the state of its partitions); empty skips it.")
	wait := flag.Duration("wait", time.Minute, "How long to wait for the consumer to catch up with the input.")
	asJSON := flag.Bool("json", false, "Print the verdict as JSON.")
	flag.Parse()
	v, err := run(*brokers, *topic, *effects, *consumer, *wait)
	if err != nil {
		fmt.Fprintln(os.Stderr, "example-verifier:", err)
		os.Exit(2)
	}
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(v)
	} else {
		fmt.Println(v)
	}
	if !v.OK() {
		os.Exit(1)
	}
}

func run(brokers, topic, effects, consumer string, wait time.Duration) (statefulapp.Verdict, error) {
	if brokers == "" || topic == "" || effects == "" {
		return statefulapp.Verdict{}, fmt.Errorf("--brokers, --topic and --effects-topic are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait+30*time.Second)
	defer cancel()
	addrs := strings.Split(brokers, ",")
	deadline := time.Now().Add(wait)
	for {
		v, err := once(ctx, addrs, topic, effects, consumer)
		if err == nil && (v.OK() || time.Now().After(deadline)) {
			return v, nil
		}
		if err != nil && time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(500 * time.Millisecond) // poll interval while the consumer catches up
	}
}

func once(ctx context.Context, brokers []string, topic, effects, consumer string) (statefulapp.Verdict, error) {
	var states []statefulapp.Summary
	if consumer != "" {
		for _, url := range strings.Split(consumer, ",") {
			s, err := statefulapp.FetchSummary(ctx, strings.TrimSpace(url))
			if err != nil {
				return statefulapp.Verdict{}, err
			}
			states = append(states, s)
		}
	}
	in, err := statefulapp.ReadTopic(ctx, brokers, topic)
	if err != nil {
		return statefulapp.Verdict{}, err
	}
	out, err := statefulapp.ReadTopic(ctx, brokers, effects)
	if err != nil {
		return statefulapp.Verdict{}, err
	}
	return statefulapp.VerifyReplicas(in, out, states...), nil
}
