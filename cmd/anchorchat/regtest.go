package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/regtest"
)

func init() {
	register(&command{name: "regtest", summary: "a local btcd + LND + anchorchat network: regtest up|down|status|mine|fund|build", run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return regtest.MainWithNodes(ctx, args, stdout, stderr, startRegtestNode)
	}})
}

// regtestHandles names the nodes of a regtest network.
var regtestHandles = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

// directoryRelay is the relay URL of the network's first node. Its relay is
// open and every node publishes its profile, DM relay list and handle claim
// there and looks others up there: the network's public directory.
var directoryRelay string

// startRegtestNode creates an identity for node spec.Index, points it at its
// LND, and starts `anchorchat node` as its own process (in a new session, so
// a Ctrl-C in the terminal does not reach it).
func startRegtestNode(ctx context.Context, spec regtest.NodeSpec) (regtest.NodeInfo, error) {
	handle := fmt.Sprintf("user%d", spec.Index)
	if spec.Index < len(regtestHandles) {
		handle = regtestHandles[spec.Index]
	}
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return regtest.NodeInfo{}, err
	}
	// A random passphrase, kept next to the keystore: this is a throwaway test network.
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return regtest.NodeInfo{}, err
	}
	passFile := filepath.Join(spec.Dir, "passphrase")
	if err := os.WriteFile(passFile, []byte(hex.EncodeToString(raw[:])+"\n"), 0o600); err != nil {
		return regtest.NodeInfo{}, err
	}
	key, err := identity.GenerateKey()
	if err != nil {
		return regtest.NodeInfo{}, err
	}
	defer key.Wipe()
	ks := node.Keystore(spec.Dir, slog.New(slog.DiscardHandler))
	ks.SkipPolicy = true // the random hex passphrase is strong; the policy's word heuristics need not judge it
	if err := ks.Create(ctx, key, hex.EncodeToString(raw[:])); err != nil {
		return regtest.NodeInfo{}, err
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
relay.events-per-second-ip = 0
relay.events-per-second-pubkey = 0
relay.reqs-per-second-ip = 0
`, handle, passFile, spec.LND.Pubkey, spec.LND.RPCAddr, spec.LND.TLSCertPath, spec.LND.MacaroonPath)
	if spec.Index == 0 || directoryRelay == "" {
		conf += "# the first node's relay is the network's open directory relay\nrelay.open = true\n"
	} else {
		conf += "publish-relays = " + directoryRelay + "\n"
	}
	if err := os.WriteFile(filepath.Join(spec.Dir, "anchorchat.conf"), []byte(conf), 0o600); err != nil {
		return regtest.NodeInfo{}, err
	}

	exe, err := os.Executable()
	if err != nil {
		return regtest.NodeInfo{}, err
	}
	logPath := filepath.Join(spec.Dir, "node.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return regtest.NodeInfo{}, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "node", "--network", "regtest", "--datadir", spec.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "ANCHORCHAT_PASSPHRASE=") // the file is the source
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return regtest.NodeInfo{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var rt node.Runtime
		if b, err := os.ReadFile(filepath.Join(spec.Dir, node.RuntimeFile)); err == nil && json.Unmarshal(b, &rt) == nil && rt.PID == cmd.Process.Pid {
			if spec.Index == 0 {
				directoryRelay = rt.RelayURL
			}
			return regtest.NodeInfo{
				PID: rt.PID, Binary: exe, URL: rt.RelayURL, LogPath: logPath,
				Info: map[string]string{"handle": handle, "npub": key.Npub(), "api": rt.APIURL, "datadir": spec.Dir,
					"status": fmt.Sprintf("%s status --network regtest --datadir %s", exe, spec.Dir)},
			}, nil
		}
		select {
		case err := <-exited:
			return regtest.NodeInfo{}, fmt.Errorf("anchorchat node %s exited at start (%v); see %s", handle, err, logPath)
		case <-deadline.C:
			_ = cmd.Process.Kill()
			return regtest.NodeInfo{}, fmt.Errorf("anchorchat node %s did not start within 60s; see %s", handle, logPath)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return regtest.NodeInfo{}, ctx.Err()
		case <-tick.C:
		}
	}
}
