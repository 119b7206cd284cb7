package cfgtypes

import (
	"reflect"
	"testing"
	"time"
)

func TestProbeWithDefaults(t *testing.T) {
	d := Probe{Path: "/healthz", Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), ExpectStatus: 200}
	if got := (Probe{}).WithDefaults(d); got != d {
		t.Errorf("empty probe: %+v", got)
	}
	set := Probe{Path: "/ready", Interval: Duration(time.Second), Timeout: Duration(time.Second), ExpectStatus: 204}
	if got := set.WithDefaults(d); got != set {
		t.Errorf("set fields were replaced: %+v", got)
	}
}

func TestProbeValidate(t *testing.T) {
	d := Probe{Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second), ExpectStatus: 200}
	sec := func(n int) Duration { return Duration(time.Duration(n) * time.Second) }
	for _, tc := range []struct {
		name  string
		probe Probe
		want  []string
	}{
		{"defaults", Probe{}, nil},
		{"everything set and good", Probe{Path: "/healthz", Interval: sec(1), Timeout: sec(1), ExpectStatus: 204}, nil},
		{"relative path", Probe{Path: "healthz"}, []string{`h.path: must start with "/", got "healthz"`}},
		{"timeout over the interval", Probe{Interval: sec(1), Timeout: sec(2)}, []string{"h.timeout: must not exceed the interval (1s), got 2s"}},
		// The comparison is made with the defaults the probe will run with.
		{"timeout over the default interval", Probe{Timeout: sec(6)}, []string{"h.timeout: must not exceed the interval (5s), got 6s"}},
		{"default timeout over a short interval", Probe{Interval: sec(1)}, []string{"h.timeout: must not exceed the interval (1s), got 2s"}},
		{"not a status", Probe{ExpectStatus: 99}, []string{"h.expect_status: must be an HTTP status between 100 and 599, got 99"}},
		{"status too large", Probe{ExpectStatus: 600}, []string{"h.expect_status: must be an HTTP status between 100 and 599, got 600"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, err := range tc.probe.Validate("h", d) {
				got = append(got, err.Error())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}
