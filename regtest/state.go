package regtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/anchorchat/anchorchat/internal/atomicfile"
)

// StateFileName is the name of the state file in a network directory.
const StateFileName = "state.json"

// State describes a running network; it is written to Dir/state.json so the
// CLI (status, mine, fund, down) can find the processes of an `up`.
type State struct {
	Version       int       `json:"version"`
	Dir           string    `json:"dir"`
	Started       time.Time `json:"started"`
	SupervisorPID int       `json:"supervisor_pid,omitempty"` // the foreground `up`, 0 if detached or a test
	// SupervisorBinary is the foreground up's argv[0]: its PID is signalled
	// only while it still runs that (a state file without it, from an older
	// harness, is trusted by PID alone).
	SupervisorBinary string      `json:"supervisor_binary,omitempty"`
	Btcd             BtcdState   `json:"btcd"`
	LNDs             []LNDState  `json:"lnds"`
	Nodes            []NodeState `json:"nodes,omitempty"`
	Wallet           WalletState `json:"wallet"`
	Lncli            string      `json:"lncli"`
	Btcctl           string      `json:"btcctl"`
}

// BtcdState is how to reach btcd.
type BtcdState struct {
	PID        int    `json:"pid"`
	Binary     string `json:"binary"`
	RPCAddr    string `json:"rpc_addr"`
	P2PAddr    string `json:"p2p_addr"`
	RPCUser    string `json:"rpc_user"`
	RPCPass    string `json:"rpc_pass"`
	RPCCert    string `json:"rpc_cert"`
	DataDir    string `json:"data_dir"`
	LogPath    string `json:"log_path"`
	MiningAddr string `json:"mining_addr"`
}

// LNDState is how to reach one LND.
type LNDState struct {
	Name         string `json:"name"`
	PID          int    `json:"pid"`
	Binary       string `json:"binary"`
	RPCAddr      string `json:"rpc_addr"`
	P2PAddr      string `json:"p2p_addr"`
	Dir          string `json:"dir"`
	TLSCertPath  string `json:"tls_cert_path"`
	MacaroonPath string `json:"macaroon_path"`
	LogPath      string `json:"log_path"`
	Pubkey       string `json:"pubkey"`
}

// NodeState is an anchorchat node started through Options.StartNode.
type NodeState struct {
	Name    string            `json:"name"`
	PID     int               `json:"pid"`
	Binary  string            `json:"binary,omitempty"`
	URL     string            `json:"url,omitempty"`
	LogPath string            `json:"log_path,omitempty"`
	Info    map[string]string `json:"info,omitempty"`
}

// WalletState locates the harness wallet. The password is stored in clear:
// this is a regtest-only wallet whose coins are worthless.
type WalletState struct {
	Path     string `json:"path"`
	Password string `json:"password"`
}

// StatePath is dir/state.json.
func StatePath(dir string) string { return filepath.Join(dir, StateFileName) }

// ReadState reads dir/state.json; the error wraps os.ErrNotExist if there is
// none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(StatePath(dir))
	if err != nil {
		return nil, fmt.Errorf("regtest: read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("regtest: parse state %s: %w", StatePath(dir), err)
	}
	return &s, nil
}

func writeState(s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("regtest: encode state: %w", err)
	}
	// A new 0600 temp file renamed into place: the state names the macaroon
	// and TLS paths and holds the RPC and wallet passwords.
	if err := atomicfile.Write(StatePath(s.Dir), append(b, '\n'), true); err != nil {
		return fmt.Errorf("regtest: write state: %w", err)
	}
	return nil
}

// supervisorBinary is what a foreground up records as SupervisorBinary: its
// own argv[0], which pidAlive compares.
func supervisorBinary() string { return os.Args[0] }

// ProcessStatus is one process of a state file and whether it runs.
type ProcessStatus struct {
	Name   string
	PID    int
	Binary string
	Alive  bool
}

// Processes lists the state's processes in stop order: supervisor, nodes,
// LNDs, btcd.
func (s *State) Processes() []ProcessStatus {
	var ps []ProcessStatus
	if s.SupervisorPID != 0 {
		ps = append(ps, ProcessStatus{Name: "supervisor", PID: s.SupervisorPID, Binary: s.SupervisorBinary})
	}
	for _, n := range s.Nodes {
		ps = append(ps, ProcessStatus{Name: n.Name, PID: n.PID, Binary: n.Binary})
	}
	for _, l := range s.LNDs {
		ps = append(ps, ProcessStatus{Name: l.Name, PID: l.PID, Binary: l.Binary})
	}
	ps = append(ps, ProcessStatus{Name: "btcd", PID: s.Btcd.PID, Binary: s.Btcd.Binary})
	for i := range ps {
		ps[i].Alive = pidAlive(ps[i].PID, ps[i].Binary)
	}
	return ps
}

// AnyAlive reports whether any process of the state still runs.
func (s *State) AnyAlive() bool {
	for _, p := range s.Processes() {
		if p.Alive && p.PID != os.Getpid() {
			return true
		}
	}
	return false
}

// ErrRunning is returned by Up when dir holds a live network.
var ErrRunning = errors.New("a regtest network is already running")

// StopState stops every live process of s by PID in order (the supervisor
// first, which stops its children itself; then nodes, LNDs, btcd) and removes
// the state file. It keeps going past errors and returns them joined.
func StopState(ctx context.Context, s *State) error {
	var errs []error
	for _, p := range s.Processes() {
		if !p.Alive || p.PID == os.Getpid() {
			continue
		}
		grace := 20 * time.Second
		if p.Name == "supervisor" {
			grace = 60 * time.Second
		}
		if err := stopPID(ctx, p.PID, p.Binary, grace); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		}
	}
	if err := os.Remove(StatePath(s.Dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
