package diff

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestFormatText(t *testing.T) {
	tests := []struct {
		name string
		r    Result
		want string
	}{
		{"match", Result{Outcome: Match, Body: BodyJSON}, "match (body compared as json)\n"},
		{
			"uncomparable", Result{Outcome: Uncomparable, Body: BodySkipped, Note: "shadow upstream failed: timeout"},
			"uncomparable (body not compared)\nnote: shadow upstream failed: timeout\n",
		},
		{
			"mismatch with everything",
			Result{Outcome: Mismatch, Body: BodyJSON, Omitted: 2, NoiseFiltered: 3, Differences: []Difference{
				{Path: "status", Kind: Changed, Primary: "200", Shadow: "500"},
				{Path: "/items/2", Kind: Added, Shadow: `{"id":3}`},
				{Path: "/old", Kind: Removed, Primary: `1`},
				{Path: "/n", Kind: TypeChanged, Primary: `1`, Shadow: `"1"`},
			}},
			"mismatch: 6 differences (body compared as json)\n" +
				"changed  status  200 → 500\n" +
				"added    /items/2  (absent) → {\"id\":3}\n" +
				"removed  /old  1 → (absent)\n" +
				"type     /n  1 → \"1\"\n" +
				"… and 2 more differences not listed\n" +
				"noise: 3 differences on noisy paths filtered\n",
		},
	}
	for _, tt := range tests {
		var b strings.Builder
		if err := FormatText(&b, tt.r); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, b.String(), tt.want)
		}
	}
	if err := FormatText(failWriter{}, Result{}); err == nil || !strings.Contains(err.Error(), "writing diff") {
		t.Errorf("write error not reported: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestCompareJSONForCLI(t *testing.T) {
	rules := mustRules(t, Spec{Ignore: []string{"/ts"}})
	if r := CompareJSON([]byte(`1`), []byte(`1.0`), rules); r.Outcome != Match {
		t.Errorf("scalars: %+v", r)
	}
	r := CompareJSON([]byte(`{"ts":1,"a":"x"}`), []byte(`{"ts":2,"a":"y"}`), rules)
	if r.Outcome != Mismatch || len(r.Differences) != 1 || r.Differences[0].Path != "/a" {
		t.Errorf("ignore: %+v", r)
	}
}

func TestResultJSON(t *testing.T) {
	r := Result{Outcome: Mismatch, Body: BodyJSON, Differences: []Difference{{Path: "/a", Kind: TypeChanged, Primary: "1", Shadow: `"1"`}}}
	raw, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"result":"mismatch","differences":[{"path":"/a","kind":"type","primary":"1","shadow":"\"1\""}],"body":"json"}`
	if string(raw) != want {
		t.Errorf("got %s\nwant %s", raw, want)
	}
	var back struct {
		Result      Outcome `json:"result"`
		Differences []Difference
	}
	if err := json.Unmarshal(raw, &back); err != nil || back.Result != Mismatch || back.Differences[0].Kind != TypeChanged {
		t.Errorf("round trip: %+v %v", back, err)
	}
	var o Outcome
	if err := o.UnmarshalText([]byte("maybe")); err == nil {
		t.Error("bad outcome accepted")
	}
	var k Kind
	if err := k.UnmarshalText([]byte("moved")); err == nil {
		t.Error("bad kind accepted")
	}
	for _, o := range []Outcome{Match, Mismatch, Uncomparable} {
		if strings.Contains(o.String(), "(") {
			t.Errorf("outcome %d has no name", o)
		}
	}
}
