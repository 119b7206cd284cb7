package config

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// fuzzEnv is a fixed environment so that ${...} references in fuzzed input
// expand the same way on every run.
func fuzzEnv(name string) (string, bool) {
	v, ok := map[string]string{
		"HOST":  "127.0.0.1",
		"PORT":  "9001",
		"EMPTY": "",
		"NL":    "a\nb",
		"COLON": "a: b",
	}[name]
	return v, ok
}

// FuzzLoad feeds arbitrary bytes to Load. It must never panic and must be
// deterministic. A config it accepts must re-validate clean, and applying
// the defaults again must change nothing (the proxy and a reload both rely
// on a loaded config being complete and final). A config it rejects must
// come back as Errors, each with a message, this file's name and a line
// inside the file: "errors tell what to do" only if they point somewhere.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"",
		"upstreams: [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: s}]\n",
		"listen: ${HOST}:${PORT}\nadmin_listen: ${HOST}:${MISSING:-9902}\nupstreams: [{name: s, url: http://${HOST}:${PORT}}]\nroutes: [{name: r, upstream: s}]\n",
		"admin_listn: x\nupstreams: [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: stabel}]\n",
		"upstreams: &u [{name: s, url: http://127.0.0.1:1}]\nroutes: [{name: r, upstream: s, match: *u}]\n",
		"limits: {max_request_body: 1e100MiB, read_timeout: -5s, max_connections: 99999999999999999999}\n",
		"x: $${NOT_EXPANDED} ${NL} ${COLON}\n",
		"- just\n- a\n- list\n",
		"upstreams:\n  - name: s\n    url: http://127.0.0.1:1\nroutes:\n  - name: r\n    upstream: s\n    split: {key: 'header:X-User', to: s, percent: 10.5}\n    shadow: {targets: [s, {name: s, headers: {set: {X-A: b}, remove: [Cookie]}}], percent: 50, compare: {secondary: s}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		cfg, err := Load("fuzz.yaml", data, fuzzEnv)
		if !bytes.Equal(in, data) {
			t.Fatal("Load modified its input")
		}
		cfg2, err2 := Load("fuzz.yaml", data, fuzzEnv)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) || !reflect.DeepEqual(cfg, cfg2) {
			t.Fatalf("Load is not deterministic on %q:\n%v\n---\n%v", data, err, err2)
		}
		if err != nil {
			checkLoadErrors(t, data, err)
			if cfg != nil {
				t.Errorf("Load returned both a config and an error")
			}
			return
		}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Fatalf("accepted config re-validates with errors %v\ninput: %q", errs, data)
		}
		// cfg2 is an independent copy of the same load to compare with.
		cfg.ApplyDefaults()
		if !reflect.DeepEqual(cfg, cfg2) {
			t.Errorf("applying the defaults to a loaded config changed it\ninput: %q\nbefore %+v\nafter  %+v", data, cfg2, cfg)
		}
		if errs := cfg.Validate(); len(errs) > 0 {
			t.Errorf("accepted config with the defaults applied again has errors %v", errs)
		}
	})
}

func checkLoadErrors(t *testing.T, data []byte, err error) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error %T %v is not a non-empty Errors", err, err)
	}
	// YAML breaks lines at LF, CRLF and a lone CR alike.
	lines := bytes.Count(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) + 1
	for _, e := range es {
		if e.Msg == "" {
			t.Errorf("an error without a message: %+v", e)
		}
		if e.File != "fuzz.yaml" {
			t.Errorf("error %q names file %q", e.Error(), e.File)
		}
		if e.Line < 0 || e.Line > lines+1 {
			t.Errorf("error %q points at line %d of a %d-line file", e.Error(), e.Line, lines)
		}
	}
}
