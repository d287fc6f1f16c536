package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// state is everything a lab made or is about to make. It is written before
// each step, so that Down finds what a crashed Up left behind.
type state struct {
	Name      string   `json:"name"`
	Dir       string   `json:"dir"`
	Binary    string   `json:"binary"`
	Dataplane string   `json:"dataplane"`
	ImagesDir string   `json:"imagesDir,omitempty"`
	AgentArgs []string `json:"agentArgs,omitempty"`
	Subnet    int      `json:"subnet"` // k of 198.18.<k>.0/24
	Bridge    string   `json:"bridge"`
	Cgroup    string   `json:"cgroup"` // the lab's cgroup2 directory; nodes, client and server below it
	ServerURL string   `json:"serverURL,omitempty"`
	Server    *proc    `json:"server,omitempty"`
	Client    member   `json:"client"`
	Nodes     []member `json:"nodes"`
}

// member is a node or the client: a namespace on the bridge with a cgroup.
type member struct {
	Name     string `json:"name"`  // node name as registered; "client" for the client
	Short    string `json:"short"` // node<i>, or client
	Netns    string `json:"netns"`
	HostVeth string `json:"hostVeth"`
	IP       string `json:"ip"`
	Cgroup   string `json:"cgroup"`
	DataDir  string `json:"dataDir,omitempty"`
	Log      string `json:"log,omitempty"`
	Agent    *proc  `json:"agent,omitempty"`
}

// proc identifies a process by PID and start time (clock ticks since boot,
// /proc/PID/stat field 22), so a reused PID is never taken for it.
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

const stateFile = "lab.json"

// ErrNoLab means there is no state file in the lab's directory.
var ErrNoLab = errors.New("no such lab")

func (s *state) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	path := filepath.Join(s.Dir, stateFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

func loadState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNoLab, stateFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var s state
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &s, nil
}
