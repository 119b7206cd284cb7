// Package demo holds what `shadowproxy demo` runs: three small JSON
// backends on loopback (v1, the stable version; v1-twin, the same program
// again, used to learn noise; v2, the candidate, which really differs in a
// few fields) and a traffic generator that plays a few hundred simulated
// users against the proxy so that splitting, shadowing, diffs and the
// rollout have something to show.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Version selects how a backend answers.
type Version int

// The demo versions.
const (
	V1 Version = iota
	V2
)

// Backend is one demo server on 127.0.0.1.
type Backend struct {
	Name     string
	URL      string
	srv      *http.Server
	requests atomic.Int64
	// failing makes every checkout answer a 500 (used to show a rollback).
	failing atomic.Bool
}

// Requests is how many requests the backend has served.
func (b *Backend) Requests() int64 { return b.requests.Load() }

// SetFailing makes the backend answer 500 to every checkout request (or
// stop doing so): a bug in the canary's checkout, which the rollout's
// guardrail must catch. The dark-launched /api/ keeps answering, so its
// story (noise learnt, real differences) stays readable meanwhile.
func (b *Backend) SetFailing(v bool) { b.failing.Store(v) }

// Backends are the three demo servers.
type Backends struct {
	V1, Twin, V2 *Backend
}

// StartBackends starts v1, its twin and v2 on ephemeral loopback ports.
func StartBackends() (*Backends, error) {
	var bs Backends
	var err error
	if bs.V1, err = startBackend("v1", V1); err != nil {
		return nil, err
	}
	if bs.Twin, err = startBackend("v1-twin", V1); err != nil {
		bs.Close()
		return nil, err
	}
	if bs.V2, err = startBackend("v2", V2); err != nil {
		bs.Close()
		return nil, err
	}
	return &bs, nil
}

// Close stops every backend.
func (bs *Backends) Close() {
	for _, b := range []*Backend{bs.V1, bs.Twin, bs.V2} {
		if b != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.srv.Shutdown(ctx)
			cancel()
		}
	}
}

func startBackend(name string, v Version) (*Backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo backend %s: %w", name, err)
	}
	b := &Backend{Name: name, URL: "http://" + ln.Addr().String()}
	b.srv = &http.Server{Handler: Handler(v, &b.requests, &b.failing), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return b, nil
}

// Handler answers the demo API as version v. Every response carries
// volatile fields (a random request id and the current time), which is what
// makes naive diffing useless and noise learning necessary.
func Handler(v Version, counter *atomic.Int64, failing *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/api/users/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		n, _ := strconv.Atoi(strings.TrimPrefix(id, "u"))
		user := map[string]any{
			"id":         id,
			"name":       fmt.Sprintf("User %d", n),
			"email":      fmt.Sprintf("user%d@example.test", n),
			"plan":       "free",
			"balance":    float64(n%100) + 0.5,
			"created_at": "2024-03-01T10:00:00Z",
			"tags":       []string{"a", "b"},
		}
		if n%5 == 0 {
			user["plan"] = "pro"
		}
		if v == V2 {
			// Real differences: a renamed plan for pro users and a new field
			// for some users; the rest of the document (balance written as
			// 5.50 vs 5.5 by some encoders) means the same.
			if user["plan"] == "pro" {
				user["plan"] = "professional"
			}
			if n%10 == 3 {
				user["tier"] = 1.0
			}
		}
		writeDemoJSON(w, r, user, counter, nil)
	})
	mux.HandleFunc("/api/products", func(w http.ResponseWriter, r *http.Request) {
		items := []map[string]any{
			{"sku": "A-1", "price": 10, "stock": 3},
			{"sku": "B-2", "price": 25.5, "stock": 0},
			{"sku": "C-3", "price": 7, "stock": 12},
		}
		if v == V2 {
			items[1]["price"] = 24.99 // a real regression a migration owner must see
		}
		writeDemoJSON(w, r, map[string]any{"items": items, "count": len(items)}, counter, nil)
	})
	mux.HandleFunc("/checkout/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		writeDemoJSON(w, r, map[string]any{"cart": r.PathValue("rest"), "version": versionName(v)}, counter, failing)
	})
	return mux
}

func versionName(v Version) string {
	if v == V2 {
		return "v2"
	}
	return "v1"
}

func writeDemoJSON(w http.ResponseWriter, r *http.Request, body map[string]any, counter *atomic.Int64, failing *atomic.Bool) {
	counter.Add(1)
	if failing != nil && failing.Load() {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var id [8]byte
	rand.Read(id[:])
	body["request_id"] = hex.EncodeToString(id[:])
	body["timestamp"] = time.Now().UTC().Format(time.RFC3339Nano)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", body["request_id"].(string))
	json.NewEncoder(w).Encode(body)
}
