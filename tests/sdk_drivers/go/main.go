// Command driver sends the test's known events through one real Go SDK, waits until the SDK has reported every
// event delivered or failed, closes it, and prints one line of JSON saying what the SDK reported.
//
//	driver -sdk segment|posthog -url <collector url> -key <write key> -run <run> [-batch N] [-interval D] [-retry-ms N]
//
// Exit status: 0 every event delivered, 1 the SDK reported failures, 2 bad usage, 3 the SDK did not settle in time.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/posthog/posthog-go"
	segment "github.com/segmentio/analytics-go/v3"
)

const sent = 4

type report struct {
	SDK       string   `json:"sdk"`
	Version   string   `json:"version"`
	Sent      int      `json:"sent"`
	Delivered int      `json:"delivered"`
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors"`
	TimedOut  bool     `json:"timed_out"`
	Seconds   float64  `json:"seconds"`
}

// tally is both SDKs' Callback: each calls Success or Failure once per message it stops handling.
type tally struct {
	mu   sync.Mutex
	r    *report
	done chan struct{}
}

func (t *tally) count(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.r.Failed++
		t.r.Errors = append(t.r.Errors, err.Error())
	} else {
		t.r.Delivered++
	}
	if t.r.Delivered+t.r.Failed == t.r.Sent {
		close(t.done)
	}
}

type segmentCallback struct{ *tally }

func (c segmentCallback) Success(segment.Message)              { c.count(nil) }
func (c segmentCallback) Failure(_ segment.Message, err error) { c.count(err) }

type posthogCallback struct{ *tally }

func (c posthogCallback) Success(posthog.APIMessage)              { c.count(nil) }
func (c posthogCallback) Failure(_ posthog.APIMessage, err error) { c.count(err) }

type closer interface{ Close() error }

// options are the SDK settings the test chooses; a zero value leaves the SDK's default.
type options struct {
	batch    int
	interval time.Duration
	retry    func(int) time.Duration
}

// moduleVersion is the SDK's version as built (analytics-go v3.3.0's own Version constant still says 3.0.0).
func moduleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func sendSegment(url, key, run string, o options, t *tally) (closer, error) {
	t.r.Version = moduleVersion("github.com/segmentio/analytics-go/v3")
	client, err := segment.NewWithConfig(key, segment.Config{
		Endpoint: url, BatchSize: o.batch, Interval: o.interval, RetryAfter: o.retry, Callback: segmentCallback{t},
	})
	if err != nil {
		return nil, err
	}
	user := "u-" + run
	order := segment.NewProperties().Set("order_id", "o-"+run).SetRevenue(42.5).SetCurrency("EUR").Set("run", run)
	for _, m := range []segment.Message{
		segment.Identify{UserId: user, Traits: segment.NewTraits().Set("plan", "pro").Set("run", run)},
		segment.Track{UserId: user, Event: "Product Viewed", Properties: segment.NewProperties().Set("product_id", "sku-1").Set("run", run)},
		segment.Track{UserId: user, Event: "Order Completed", Properties: order},
		segment.Page{UserId: user, Name: "Home", Properties: segment.NewProperties().SetPath("/home").Set("run", run)},
	} {
		if err := client.Enqueue(m); err != nil {
			return client, err
		}
	}
	return client, nil
}

func sendPostHog(url, key, run string, o options, t *tally) (closer, error) {
	t.r.Version = moduleVersion("github.com/posthog/posthog-go")
	client, err := posthog.NewWithConfig(key, posthog.Config{
		Endpoint: url, BatchSize: o.batch, Interval: o.interval, RetryAfter: o.retry, Callback: posthogCallback{t},
	})
	if err != nil {
		return nil, err
	}
	user := "u-" + run
	order := posthog.NewProperties().Set("order_id", "o-"+run).Set("revenue", 42.5).Set("currency", "EUR").Set("run", run)
	page := posthog.NewProperties().Set("$current_url", "https://shop.example/home").Set("run", run)
	for _, m := range []posthog.Message{
		posthog.Identify{DistinctId: user, Properties: posthog.NewProperties().Set("plan", "pro").Set("run", run)},
		posthog.Capture{DistinctId: user, Event: "Product Viewed", Properties: posthog.NewProperties().Set("product_id", "sku-1").Set("run", run)},
		posthog.Capture{DistinctId: user, Event: "Order Completed", Properties: order},
		posthog.Capture{DistinctId: user, Event: "$pageview", Properties: page},
	} {
		if err := client.Enqueue(m); err != nil {
			return client, err
		}
	}
	return client, nil
}

func main() {
	sdk := flag.String("sdk", "", "segment or posthog")
	url := flag.String("url", "", "the collector's base URL")
	key := flag.String("key", "", "the write key")
	run := flag.String("run", "", "the run marker: user u-<run>, property run=<run>")
	batch := flag.Int("batch", 0, "messages a request (0: the SDK's default)")
	// The SDKs send a batch when it is full or every Interval (5 s): a shorter one, so the test does not wait.
	interval := flag.Duration("interval", 200*time.Millisecond, "how often the SDK sends what it has queued")
	retryMs := flag.Int("retry-ms", 0, "a fixed delay between attempts in ms (0: the SDK's default backoff)")
	settle := flag.Duration("settle", 120*time.Second, "how long to wait for the SDK to report every event")
	flag.Parse()

	started := time.Now()
	r := &report{SDK: *sdk, Sent: sent, Errors: []string{}}
	t := &tally{r: r, done: make(chan struct{})}
	o := options{batch: *batch, interval: *interval}
	if *retryMs > 0 {
		o.retry = func(int) time.Duration { return time.Duration(*retryMs) * time.Millisecond }
	}
	var client closer
	var err error
	switch *sdk {
	case "segment":
		client, err = sendSegment(*url, *key, *run, o, t)
	case "posthog":
		client, err = sendPostHog(*url, *key, *run, o, t)
	}
	if client == nil || *url == "" || *key == "" || *run == "" {
		fmt.Fprintf(os.Stderr, "usage: driver -sdk segment|posthog -url URL -key KEY -run RUN [-batch N] [-interval D] [-retry-ms N] (%v)\n", err)
		os.Exit(2)
	}
	if err != nil {
		r.Errors = append(r.Errors, "driver: "+err.Error())
	}
	// Close flushes what is queued, but also cuts short a batch waiting to be retried (it is dropped as failed):
	// so it comes only after the SDK has settled every event, or when the wait is over.
	select {
	case <-t.done:
	case <-time.After(*settle):
	}
	t.mu.Lock()
	r.TimedOut = r.Delivered+r.Failed < r.Sent
	t.mu.Unlock()
	_ = client.Close()
	t.mu.Lock()
	r.Seconds = time.Since(started).Seconds()
	out, _ := json.Marshal(r)
	t.mu.Unlock()
	fmt.Println(string(out))
	switch {
	case r.TimedOut:
		os.Exit(3)
	case r.Delivered < r.Sent:
		os.Exit(1)
	}
}
