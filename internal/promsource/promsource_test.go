package promsource

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/splitter"
)

func TestExpand(t *testing.T) {
	got := Expand(`sum(rate(x{cohort="$cohort",route="$route"}[$window]))`, "api", "m", splitter.ArmCanary, 5*time.Minute)
	if got != `sum(rate(x{cohort="canary",route="api"}[300s]))` {
		t.Errorf("Expand = %s", got)
	}
}

func TestValueAgainstAFakePrometheus(t *testing.T) {
	answers := map[string]string{
		"one":    `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.0421"]}]}}`,
		"scalar": `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"7"]}}`,
		"none":   `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"many":   `{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}`,
		"bad":    `{"status":"error","errorType":"bad_data","error":"parse error at char 3"}`,
	}
	var lastQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastQuery = r.URL.Query().Get("query")
		name, _, _ := strings.Cut(lastQuery, "{")
		w.Write([]byte(answers[name]))
	}))
	defer srv.Close()
	s, err := New(srv.URL, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := func(query string) context.Context {
		return rollout.WithExternalQuery(context.Background(), rollout.ExternalQuery{Route: "api", Metric: "m", Query: query})
	}
	v, err := s.Value(ctx(`one{c="$cohort"}`), "m", splitter.ArmControl, time.Minute)
	if err != nil || v != 0.0421 || lastQuery != `one{c="control"}` {
		t.Errorf("vector: %v %v %q", v, err, lastQuery)
	}
	if v, err := s.Value(ctx("scalar{}"), "m", splitter.ArmCanary, time.Minute); err != nil || v != 7 {
		t.Errorf("scalar: %v %v", v, err)
	}
	for q, want := range map[string]string{"none{}": "returned no data", "many{}": "returned 2 series", "bad{}": "parse error"} {
		if _, err := s.Value(ctx(q), "m", splitter.ArmCanary, time.Minute); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", q, err, want)
		}
	}
	if _, err := s.Value(ctx(""), "m", splitter.ArmCanary, time.Minute); err == nil {
		t.Error("a metric without a query was answered")
	}
	if _, err := New("ftp://x", time.Second); err == nil {
		t.Error("bad url accepted")
	}
}
