package regtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/anchorchat/anchorchat/identity"
)

// nodeHandles names the nodes of a regtest network.
var nodeHandles = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

// The node's data-dir files this package reads or writes. They are the
// node's (internal/node: KeystoreFile, RuntimeFile, Runtime), repeated here
// because regtest must not import the node: the node's packages import
// regtest in their tests. TestRegtestUpStartsNodes (cmd/anchorchat) fails
// if they drift apart.
const (
	nodeKeystoreFile = "identity.json"
	nodeRuntimeFile  = "node.json"
)

// nodeRuntime is the part of a running node's runtime file used here.
type nodeRuntime struct {
	PID      int    `json:"pid"`
	RelayURL string `json:"relay_url"`
	APIURL   string `json:"api_url"`
}

// AnchorchatNodes returns a StartNodeFunc that runs real anchorchat nodes
// from the anchorchat binary at exe: for node i, a new identity (a random
// passphrase kept in a 0600 file: a throwaway test network), a handle
// (alice, bob, …), its own relay on a free loopback port, the connection to
// LND i mod N, and `anchorchat node` as its own process (in a new session, so
// a Ctrl-C in the terminal does not reach it). The first node's relay is open
// and is the network's directory: every other node publishes its profile, DM
// relay list and handle claim there and looks others up there.
func AnchorchatNodes(exe string) StartNodeFunc {
	var mu sync.Mutex
	var directory string // the first node's relay URL
	return func(ctx context.Context, spec NodeSpec) (NodeInfo, error) {
		mu.Lock()
		dir := directory
		mu.Unlock()
		info, err := startAnchorchatNode(ctx, exe, spec, dir)
		if err == nil && spec.Index == 0 {
			mu.Lock()
			directory = info.URL
			mu.Unlock()
		}
		return info, err
	}
}

func startAnchorchatNode(ctx context.Context, exe string, spec NodeSpec, directoryRelay string) (NodeInfo, error) {
	handle := fmt.Sprintf("user%d", spec.Index)
	if spec.Index < len(nodeHandles) {
		handle = nodeHandles[spec.Index]
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return NodeInfo{}, err
	}
	// A random passphrase, kept next to the keystore: this is a throwaway test network.
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return NodeInfo{}, err
	}
	passFile := filepath.Join(spec.Dir, "passphrase")
	if err := os.WriteFile(passFile, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		return NodeInfo{}, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return NodeInfo{}, err
	}
	defer key.Wipe()
	ks := identity.NewKeystore(filepath.Join(spec.Dir, nodeKeystoreFile))
	ks.Logger = slog.New(slog.DiscardHandler)
	ks.SkipPolicy = true // the random hex passphrase is strong; the policy's word heuristics need not judge it
	if err := ks.Create(ctx, key, hex.EncodeToString(raw[:])); err != nil {
		return NodeInfo{}, err
	}
	conf := fmt.Sprintf(`# written by anchorchat regtest up
network = regtest
listen = 127.0.0.1:0
handle = %s
passphrase-file = %s
ln.node-pubkey = %s
lnd.rpcserver = %s
lnd.tlscertpath = %s
lnd.macaroonpath = %s
btcd.rpcserver = %s
btcd.rpcuser = %s
btcd.rpcpass = %s
btcd.rpccert = %s
anchor.confirmations = 2
anchor.poll-interval = 2s
relay.events-per-second-ip = 0
relay.events-per-second-pubkey = 0
relay.reqs-per-second-ip = 0
`, handle, passFile, spec.LND.Pubkey, spec.LND.RPCAddr, spec.LND.TLSCertPath, spec.LND.MacaroonPath,
		spec.Btcd.RPCAddr, spec.Btcd.RPCUser, spec.Btcd.RPCPass, spec.Btcd.RPCCert)
	if directoryRelay == "" {
		conf += "# the first node's relay is the network's open directory relay\nrelay.open = true\n"
	} else {
		conf += "publish-relays = " + directoryRelay + "\n"
	}
	if err := os.WriteFile(filepath.Join(spec.Dir, "anchorchat.conf"), []byte(conf), 0o600); err != nil {
		return NodeInfo{}, err
	}

	logPath := filepath.Join(spec.Dir, "node.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return NodeInfo{}, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "node", "--network", "regtest", "--datadir", spec.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "ANCHORCHAT_PASSPHRASE=") // the file is the source
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return NodeInfo{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var rt nodeRuntime
		if b, err := os.ReadFile(filepath.Join(spec.Dir, nodeRuntimeFile)); err == nil && json.Unmarshal(b, &rt) == nil && rt.PID == cmd.Process.Pid {
			return NodeInfo{
				PID: rt.PID, Binary: exe, URL: rt.RelayURL, LogPath: logPath,
				Info: map[string]string{"handle": handle, "npub": key.Npub(), "api": rt.APIURL, "datadir": spec.Dir,
					"status": fmt.Sprintf("%s status --network regtest --datadir %s", exe, spec.Dir)},
			}, nil
		}
		select {
		case err := <-exited:
			return NodeInfo{}, fmt.Errorf("anchorchat node %s exited at start (%v); see %s", handle, err, logPath)
		case <-deadline.C:
			_ = cmd.Process.Kill()
			return NodeInfo{}, fmt.Errorf("anchorchat node %s did not start within 60s; see %s", handle, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return NodeInfo{}, ctx.Err()
		case <-tick.C:
		}
	}
}
