package admin

import "net/http"

// member guards endpoints other fleet members call: they always send the
// admin token, so it is required whenever one is configured, whatever
// ProtectReads says (windows reveal traffic volumes and error rates).
func (a *api) member(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.o.Token != "" && !a.authorized(r) {
			a.deny(w, r, "fleet member endpoints need Authorization: Bearer <admin.token>")
			return
		}
		h(w, r)
	}
}

func (a *api) fleet(w http.ResponseWriter, _ *http.Request) {
	if a.o.Fleet == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "fleet mode is off (no fleet: section in the config)"})
		return
	}
	writeJSON(w, http.StatusOK, a.o.Fleet())
}

func (a *api) fleetWindows(w http.ResponseWriter, r *http.Request) {
	if a.o.FleetWindows == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "fleet mode is off (no fleet: section in the config)"})
		return
	}
	v, err := a.o.FleetWindows(r.URL.Query())
	a.answer(w, v, err)
}

// fleetScope answers /api/v1/routes?scope=fleet (true when it did): the
// routes merged over every member. scope=instance (or none) is this
// member's own view.
func (a *api) fleetScope(w http.ResponseWriter, r *http.Request) bool {
	switch r.URL.Query().Get("scope") {
	case "", "instance":
		return false
	case "fleet":
		if a.o.FleetRoutes == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "fleet mode is off (no fleet: section in the config)"})
			return true
		}
		v, err := a.o.FleetRoutes()
		a.answer(w, v, err)
		return true
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "scope must be instance or fleet"})
		return true
	}
}
