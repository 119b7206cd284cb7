package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"
)

// TrafficStats counts what the generator sent and how it was answered.
type TrafficStats struct {
	Sent, OK, Failed int64
}

// Traffic plays simulated users against proxyURL (which must be a loopback
// address) at about rps requests per second until ctx ends or max requests
// have been sent (0: no cap). Each request carries an X-User-ID so the
// split is sticky per user.
func Traffic(ctx context.Context, proxyURL string, rps int, maxRequests int64) (TrafficStats, error) {
	u, err := url.Parse(proxyURL)
	if err != nil {
		return TrafficStats{}, err
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		return TrafficStats{}, fmt.Errorf("demo traffic only targets loopback, not %q", h)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(max(rps, 1)))
	defer tick.Stop()
	var st TrafficStats
	paths := []string{"/api/users/u%d", "/api/users/u%d", "/api/products", "/checkout/cart-%d", "/checkout/cart-%d"}
	for maxRequests == 0 || st.Sent < maxRequests {
		select {
		case <-ctx.Done():
			return st, nil
		case <-tick.C:
		}
		user := rand.IntN(500)
		p := paths[rand.IntN(len(paths))]
		if p != "/api/products" {
			p = fmt.Sprintf(p, user)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+p, nil)
		req.Header.Set("X-User-ID", fmt.Sprintf("user-%d", user))
		st.Sent++
		resp, err := client.Do(req)
		if err != nil {
			st.Failed++
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 {
			st.OK++
		} else {
			st.Failed++
		}
	}
	return st, nil
}
