// Package promsource answers the rollout controller's external metrics
// (conversion rate, crash rate, CPU: whatever the proxy cannot measure)
// with instant queries against a Prometheus-compatible HTTP API.
//
// A route declares each metric with a PromQL template:
//
//	external_metrics:
//	  - name: conversion_rate
//	    unit: ratio
//	    query: sum(rate(checkout_done_total{cohort="$cohort"}[$window])) / sum(rate(checkout_started_total{cohort="$cohort"}[$window]))
//
// $cohort becomes canary, control or excluded; $window the condition's
// window in seconds ("300s"); $route and $metric the route and metric names.
// The query must return exactly one sample.
package promsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shadowproxy/shadowproxy/internal/rollout"
	"github.com/shadowproxy/shadowproxy/splitter"
)

// Source implements rollout.ExternalSource.
type Source struct {
	endpoint string
	client   *http.Client
}

// New returns a Source querying baseURL (http://prometheus:9090), each
// query bounded by timeout.
func New(baseURL string, timeout time.Duration) (*Source, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus url %q: want http(s)://host:port", baseURL)
	}
	return &Source{
		endpoint: strings.TrimSuffix(baseURL, "/") + "/api/v1/query",
		client:   &http.Client{Timeout: timeout},
	}, nil
}

// Expand substitutes the placeholders of a query template.
func Expand(template, route, metric string, cohort splitter.Arm, window time.Duration) string {
	return strings.NewReplacer(
		"$cohort", cohort.String(),
		"$window", strconv.FormatInt(int64(window/time.Second), 10)+"s",
		"$route", route,
		"$metric", metric,
	).Replace(template)
}

// Value runs the metric's query for cohort over window.
func (s *Source) Value(ctx context.Context, metric string, cohort splitter.Arm, window time.Duration) (float64, error) {
	q, ok := rollout.ExternalQueryFrom(ctx)
	if !ok || q.Query == "" {
		return 0, fmt.Errorf("external metric %q declares no query", metric)
	}
	expr := Expand(q.Query, q.Route, metric, cohort, window)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.endpoint+"?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus query for %q: %w", metric, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, fmt.Errorf("prometheus query for %q: %w", metric, err)
	}
	return parse(body, resp.StatusCode, metric)
}

// apiResponse is the part of Prometheus's query answer that matters here.
type apiResponse struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

func parse(body []byte, status int, metric string) (float64, error) {
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("prometheus query for %q: HTTP %d, not a query answer: %w", metric, status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("prometheus query for %q: %s", metric, r.Error)
	}
	var raw []any
	switch r.Data.ResultType {
	case "scalar":
		if err := json.Unmarshal(r.Data.Result, &raw); err != nil {
			return 0, err
		}
	case "vector":
		var vec []struct {
			Value []any `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return 0, err
		}
		switch len(vec) {
		case 0:
			return 0, fmt.Errorf("prometheus query for %q returned no data", metric)
		case 1:
			raw = vec[0].Value
		default:
			return 0, fmt.Errorf("prometheus query for %q returned %d series; aggregate it to one (sum, avg)", metric, len(vec))
		}
	default:
		return 0, fmt.Errorf("prometheus query for %q returned a %s; want a scalar or a single-sample vector", metric, r.Data.ResultType)
	}
	if len(raw) != 2 {
		return 0, errors.New("malformed sample")
	}
	str, _ := raw[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return 0, fmt.Errorf("prometheus query for %q: sample %q is not a number", metric, str)
	}
	return v, nil
}
