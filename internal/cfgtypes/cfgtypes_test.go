package cfgtypes

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParsePercent(t *testing.T) {
	tests := []struct {
		in      string
		want    BasisPoints
		wantErr bool
	}{
		{"0", 0, false},
		{"5", 500, false},
		{"1.15", 115, false},
		{"12.25", 1225, false},
		{"0.5%", 50, false},
		{".5", 50, false},
		{"100", 10000, false},
		{"100.00", 10000, false},
		{"1.150", 115, false},
		{"0.01", 1, false},
		{"100.01", 0, true},
		{"101", 0, true},
		{"-1", 0, true},
		{"1.155", 0, true},
		{"abc", 0, true},
		{"", 0, true},
		{"1.", 0, true},
		{"1e2", 0, true},
	}
	for _, tt := range tests {
		got, err := ParsePercent(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePercent(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParsePercent(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestPercentExactForAllTwoPlaceValues(t *testing.T) {
	// Every value a user can write must map to exactly its basis points.
	for bp := 0; bp <= 10000; bp++ {
		s := BasisPoints(bp).String()
		got, err := ParsePercent(s)
		if err != nil || int(got) != bp {
			t.Fatalf("round trip of %d via %q = %d, %v", bp, s, got, err)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"10MiB", 10 << 20, false},
		{"512KiB", 512 << 10, false},
		{"1MB", 1000000, false},
		{"4096", 4096, false},
		{"2G", 2 << 30, false},
		{"1.5KiB", 1536, false},
		{"0", 0, false},
		{"-1", 0, true},
		{"ten", 0, true},
		{"MiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if FormatSize(10<<20) != "10MiB" || FormatSize(1000) != "1000B" {
		t.Errorf("FormatSize wrong: %s %s", FormatSize(10<<20), FormatSize(1000))
	}
}

func TestParseRatio(t *testing.T) {
	for in, want := range map[string]float64{"0.5%": 0.005, "0.005": 0.005, "99%": 0.99, "0": 0} {
		got, err := ParseRatio(in)
		if err != nil || got != want {
			t.Errorf("ParseRatio(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1%", "x", "NaN"} {
		if _, err := ParseRatio(in); err == nil {
			t.Errorf("ParseRatio(%q) accepted", in)
		}
	}
}

func TestYAMLDecoding(t *testing.T) {
	var v struct {
		D Duration   `yaml:"d"`
		S Size       `yaml:"s"`
		P Percent    `yaml:"p"`
		R Ratio      `yaml:"r"`
		M Multiplier `yaml:"m"`
	}
	if err := yaml.Unmarshal([]byte("d: 250ms\ns: 1MiB\np: 1.15\nr: 0.5%\nm: 2x\n"), &v); err != nil {
		t.Fatal(err)
	}
	if v.D.D() != 250*time.Millisecond || v.S != 1<<20 || v.P.BP() != 115 || v.R != 0.005 || v.M != 2 {
		t.Errorf("decoded %+v", v)
	}
	for _, bad := range []string{"d: 5 seconds", "s: lots", "p: 150", "m: -2x", "r: [1]"} {
		if err := yaml.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPrefix(t *testing.T) {
	errs := Prefix("routes[0]", []error{Errorf("split.percent", "bad"), Errorf("[2].x", "y"), errors.New("plain")})
	want := []string{"routes[0].split.percent: bad", "routes[0][2].x: y", "routes[0]: plain"}
	for i, e := range errs {
		if e.Error() != want[i] {
			t.Errorf("got %q want %q", e.Error(), want[i])
		}
	}
}

func TestIsToken(t *testing.T) {
	for s, want := range map[string]bool{"X-User-ID": true, "GET": true, "a!#$%&'*+-.^_`|~z": true, "": false, "has space": false, "colon:": false, "é": false, "(x)": false} {
		if IsToken(s) != want {
			t.Errorf("IsToken(%q) = %v", s, !want)
		}
	}
}

func TestIsLabelValue(t *testing.T) {
	for s, want := range map[string]bool{
		"internal-users": true, "smoke_1": true, "A": true,
		"": false, "two words": false, "a/b": false, "ü": false,
		strings.Repeat("x", 64): true, strings.Repeat("x", 65): false,
	} {
		if got := IsLabelValue(s); got != want {
			t.Errorf("IsLabelValue(%q) = %v, want %v", s, got, want)
		}
	}
}
