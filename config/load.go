package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/shadowproxy/shadowproxy/internal/cfgtypes"
)

// Error is one configuration problem with its location.
type Error struct {
	File string
	Line int
	Path string
	Msg  string
}

// Error renders "file:line: path: message", leaving out parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteByte(':')
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in line order.
type Errors []*Error

// Error joins the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// LoadFile reads, expands, decodes, defaults and validates the file at path.
// On failure the error is an Errors listing every problem.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Load(path, data, os.LookupEnv)
}

// Load decodes data (named source in messages). lookupEnv resolves ${NAME}
// references; pass os.LookupEnv in production and a map in tests.
func Load(source string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	l := &loader{source: source}
	expanded := l.expandEnv(data, lookupEnv)
	var root yaml.Node
	if err := yaml.Unmarshal(expanded, &root); err != nil {
		l.addYAMLError(err)
		return nil, l.errs
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		l.add(0, "", "the file is empty: at least upstreams and routes are required")
		return nil, l.errs
	}
	l.root = root.Content[0]
	// The walk reports shape problems and neutralises them (unknown keys
	// removed, broken values nulled) so that decoding and validation can
	// still run and report everything else in the same pass.
	l.check(l.root, reflect.TypeOf(Config{}), "")
	var cfg Config
	if err := l.root.Decode(&cfg); err != nil {
		l.addYAMLError(err)
		l.sort()
		return nil, l.errs
	}
	cfg.Source = source
	cfg.ApplyDefaults()
	for _, err := range cfg.Validate() {
		l.addField(err)
	}
	if len(l.errs) > 0 {
		l.sort()
		return nil, l.errs
	}
	return &cfg, nil
}

type loader struct {
	source string
	root   *yaml.Node
	errs   Errors
	// broken holds the paths whose values the walk rejected; validation
	// errors under them would only repeat the problem.
	broken []string
}

func (l *loader) add(line int, path, msg string) {
	l.errs = append(l.errs, &Error{File: l.source, Line: line, Path: path, Msg: msg})
}

// addField places a validation error at the line of its path.
func (l *loader) addField(err error) {
	var fe *cfgtypes.FieldError
	if !errors.As(err, &fe) {
		l.add(0, "", err.Error())
		return
	}
	for _, b := range l.broken {
		if fe.Path == b || strings.HasPrefix(fe.Path, b+".") || strings.HasPrefix(fe.Path, b+"[") {
			return
		}
	}
	l.add(LineOf(l.root, fe.Path), fe.Path, fe.Msg)
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

func (l *loader) addYAMLError(err error) {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for _, m := range msgs {
		if sm := yamlLineRE.FindStringSubmatch(m); sm != nil {
			n, _ := strconv.Atoi(sm[1])
			l.add(n, "", sm[2])
			continue
		}
		l.add(0, "", strings.TrimPrefix(m, "yaml: "))
	}
}

func (l *loader) sort() {
	sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
}

var envRE = regexp.MustCompile(`\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} and ${NAME:-default}; "$${" stays a literal "${".
// Expansion happens before parsing so it works in any position, and it keeps
// line numbers because a value containing a newline is rejected.
func (l *loader) expandEnv(data []byte, lookup func(string) (string, bool)) []byte {
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		if !bytes.Contains(line, []byte("${")) {
			continue
		}
		lines[i] = envRE.ReplaceAllFunc(line, func(m []byte) []byte {
			if string(m) == "$${" {
				return []byte("${")
			}
			sm := envRE.FindSubmatch(m)
			name := string(sm[1])
			v, ok := lookup(name)
			if !ok || v == "" {
				if sm[2] != nil {
					return sm[3]
				}
				if !ok {
					l.add(i+1, "", fmt.Sprintf("environment variable %s is not set (write ${%s:-default} to give a default)", name, name))
					return nil
				}
			}
			if strings.ContainsAny(v, "\n\r") {
				l.add(i+1, "", fmt.Sprintf("environment variable %s contains a line break, which cannot be expanded into YAML", name))
				return nil
			}
			return []byte(v)
		})
	}
	return bytes.Join(lines, []byte("\n"))
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// check walks the YAML tree alongside the Go type it will decode into and
// reports unknown keys (with a suggestion), wrong shapes and scalar values
// that do not parse, all at once and each with a path. yaml.v3 alone stops at
// the first error returned by a custom unmarshaler and gives no paths.
func (l *loader) check(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	isUnmarshaler := reflect.PointerTo(t).Implements(unmarshalerType)
	if isUnmarshaler && !(t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			l.reject(n, path, cleanDecodeError(err))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			l.reject(n, path, fmt.Sprintf("want a mapping (key: value), got %s", describe(n)))
			return
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		kept := n.Content[:0:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := cfgtypes.JoinPath(path, k.Value)
			if seen[k.Value] {
				l.add(k.Line, p, "key appears twice; remove one (YAML would silently keep the last)")
				continue
			}
			seen[k.Value] = true
			ft, ok := fields[k.Value]
			if !ok {
				names := make([]string, 0, len(fields))
				for name := range fields {
					names = append(names, name)
				}
				hint := ForeignName(k.Value, names)
				if hint == "" {
					hint = cfgtypes.Suggest(k.Value, names)
				}
				l.add(k.Line, p, "unknown field"+hint)
				continue
			}
			l.check(v, ft, p)
			kept = append(kept, k, v)
		}
		n.Content = kept
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			l.reject(n, path, fmt.Sprintf("want a list, got %s", describe(n)))
			return
		}
		for i, item := range n.Content {
			l.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			l.reject(n, path, fmt.Sprintf("want a mapping (key: value), got %s", describe(n)))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			l.check(n.Content[i+1], t.Elem(), cfgtypes.JoinPath(path, n.Content[i].Value))
		}
	case reflect.Interface:
		// Anything goes.
	default:
		if n.Kind != yaml.ScalarNode {
			l.reject(n, path, fmt.Sprintf("want a single value, got %s", describe(n)))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			l.reject(n, path, fmt.Sprintf("want %s, got %q", kindName(t), n.Value))
		}
	}
}

// reject reports a value that cannot be decoded and replaces it with null,
// so the rest of the file still decodes.
func (l *loader) reject(n *yaml.Node, path, msg string) {
	l.add(n.Line, path, msg)
	l.broken = append(l.broken, path)
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "", Line: n.Line, Column: n.Column}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a string"
	}
}

func cleanDecodeError(err error) string {
	msg := err.Error()
	if sm := yamlLineRE.FindStringSubmatch(strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")); sm != nil {
		return sm[2]
	}
	return strings.TrimPrefix(msg, "yaml: ")
}

// yamlFields maps the YAML keys of struct t (following inline fields) to
// their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

var pathSegRE = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

// LineOf returns the line of the node at path (such as "routes[1].split.to")
// under root, or of its nearest existing ancestor when the field is missing.
func LineOf(root *yaml.Node, path string) int {
	n := root
	if n == nil {
		return 0
	}
	line := n.Line
	for _, m := range pathSegRE.FindAllStringSubmatch(path, -1) {
		var next *yaml.Node
		switch {
		case m[2] != "" && n.Kind == yaml.SequenceNode:
			i, _ := strconv.Atoi(m[2])
			if i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		case m[1] != "" && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == m[1] {
					// The key's line reads better than the value's for blocks.
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		if n.Kind == yaml.ScalarNode {
			line = n.Line
		}
	}
	return line
}
