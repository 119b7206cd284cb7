package evidence

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

func TestStoreBoundedAndListed(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []*Store{
		{Max: 3, Dir: func(route string) string { return filepath.Join(dir, route) }},
		{Max: 3},
	} {
		dropped := 0
		s.Dropped = func(string) { dropped++ }
		for i := 1; i <= 5; i++ {
			id := fmt.Sprintf("2026010%dT000000.000Z-rollback-%d", i, i)
			if err := s.Save("api", id, []byte(fmt.Sprintf(`{"id":%q,"kind":"rollback","reason":"r%d"}`, id, i))); err != nil {
				t.Fatal(err)
			}
		}
		list, err := s.List("api")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 || list[0].Reason != "r5" || list[2].Reason != "r3" || dropped != 2 {
			t.Fatalf("list %+v dropped %d; want the newest 3, newest first, 2 dropped", list, dropped)
		}
		if _, err := s.Get("api", list[0].ID); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"../x", "a/b", "", "20260101T000000.000Z-rollback-1"} {
			if _, err := s.Get("api", bad); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(%q) = %v; want ErrNotFound", bad, err)
			}
		}
		if err := s.Save("api", "../escape", []byte("{}")); err == nil {
			t.Fatal("an id with a path was accepted")
		}
	}
}
