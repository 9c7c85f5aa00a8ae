package winrstest

import (
	"encoding/json"
	"os"
	"strings"
)

// state is what a Host remembers between runs of the demo's test host.
type state struct {
	IIS      map[string]*IISAuth      `json:"iis"`
	Groups   map[string][]string      `json:"groups"`
	Exchange map[string]exchangeState `json:"exchange,omitempty"`
}

type exchangeState struct {
	Name, Version string
	Creds         []ASACredential
}

// SaveState writes the host's state to a file (mode 0600: it holds ASA passwords).
func (h *Host) SaveState(path string) error {
	h.mu.Lock()
	st := state{IIS: h.iis, Groups: h.groups, Exchange: map[string]exchangeState{}}
	for k, s := range h.exch {
		st.Exchange[k] = exchangeState{Name: s.name, Version: s.version, Creds: s.creds}
	}
	b, err := json.Marshal(st)
	h.mu.Unlock()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// LoadState restores a state written by SaveState.
func (h *Host) LoadState(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	for _, s := range st.Exchange {
		h.AddExchangeServer(s.Name, s.Version)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if st.IIS != nil {
		h.iis = st.IIS
	}
	if st.Groups != nil {
		h.groups = st.Groups
	}
	for k, s := range st.Exchange {
		h.exch[strings.ToLower(k)].creds = s.Creds
	}
	return nil
}
