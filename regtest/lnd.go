package regtest

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/lightningnetwork/lnd/lnrpc/routerrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/macaroon.v2"
)

// LND is a running LND node of the network with its gRPC clients.
type LND struct {
	LNDState
	Conn   *grpc.ClientConn
	Client lnrpc.LightningClient
	Router routerrpc.RouterClient
	State  lnrpc.StateClient

	proc *proc
}

// macaroonCred is the per-RPC credential LND expects: metadata
// "macaroon: hex(file)".
type macaroonCred string

func (m macaroonCred) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"macaroon": string(m)}, nil
}

func (macaroonCred) RequireTransportSecurity() bool { return true }

// DialLND opens a gRPC connection to an LND with its TLS certificate and a
// macaroon file (the way lncli does).
func DialLND(ctx context.Context, rpcAddr, tlsCertPath, macaroonPath string) (*grpc.ClientConn, error) {
	creds, err := credentials.NewClientTLSFromFile(tlsCertPath, "")
	if err != nil {
		return nil, fmt.Errorf("regtest: lnd tls cert: %w", err)
	}
	mac, err := os.ReadFile(macaroonPath)
	if err != nil {
		return nil, fmt.Errorf("regtest: lnd macaroon: %w", err)
	}
	conn, err := grpc.DialContext(ctx, rpcAddr,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(macaroonCred(hex.EncodeToString(mac))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(50<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("regtest: dial lnd %s: %w", rpcAddr, err)
	}
	return conn, nil
}

func (l *LND) connect(ctx context.Context) error {
	conn, err := DialLND(ctx, l.RPCAddr, l.TLSCertPath, l.MacaroonPath)
	if err != nil {
		return err
	}
	l.Conn = conn
	l.Client = lnrpc.NewLightningClient(conn)
	l.Router = routerrpc.NewRouterClient(conn)
	l.State = lnrpc.NewStateClient(conn)
	return nil
}

// waitFiles waits for LND's TLS certificate and admin macaroon (written once
// its wallet exists). LND writes the macaroon with os.WriteFile: the file
// exists, empty, before its bytes are in; read then, it would fail every
// RPC. So the macaroon must parse.
func (l *LND) waitFiles(ctx context.Context) error {
	for {
		_, e1 := os.Stat(l.TLSCertPath)
		mac, e2 := os.ReadFile(l.MacaroonPath)
		if e1 == nil && e2 == nil && new(macaroon.Macaroon).UnmarshalBinary(mac) == nil {
			return nil
		}
		if err := l.checkRunning(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("regtest: %s (pid %d) wrote no tls.cert and admin.macaroon; see its log %s: %w", l.Name, l.PID, l.LogPath, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (l *LND) checkRunning() error {
	if l.proc == nil {
		return nil
	}
	select {
	case <-l.proc.exited:
		return fmt.Errorf("regtest: %s (pid %d) exited during startup; its log %s ends:\n%s", l.Name, l.PID, l.LogPath, logTail(l.LogPath, 30))
	default:
		return nil
	}
}

// waitReady connects to LND (once its files exist) and waits until it is
// synced to height.
func (l *LND) waitReady(ctx context.Context, height int32) error {
	if l.Conn == nil {
		if err := l.waitFiles(ctx); err != nil {
			return err
		}
		if err := l.connect(ctx); err != nil {
			return err
		}
	}
	return l.WaitSynced(ctx, height)
}

// WaitSynced waits until LND's server is active and its wallet is synced to
// height (or beyond).
func (l *LND) WaitSynced(ctx context.Context, height int32) error {
	var last string
	for {
		if err := l.checkRunning(); err != nil {
			return err
		}
		st, err := l.State.GetState(ctx, &lnrpc.GetStateRequest{})
		switch {
		case err != nil:
			last = err.Error()
		case st.State != lnrpc.WalletState_SERVER_ACTIVE:
			last = "state " + st.State.String()
		default:
			info, err := l.Client.GetInfo(ctx, &lnrpc.GetInfoRequest{})
			if err != nil {
				last = err.Error()
				break
			}
			if info.SyncedToChain && int32(info.BlockHeight) >= height {
				l.Pubkey = info.IdentityPubkey
				return nil
			}
			last = fmt.Sprintf("synced=%v height %d of %d", info.SyncedToChain, info.BlockHeight, height)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("regtest: %s (pid %d) not synced (%s); see its log %s: %w", l.Name, l.PID, last, l.LogPath, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LncliArgs are the flags lncli needs to reach this node.
func (l *LND) LncliArgs() []string { return l.LNDState.lncliArgs() }

func (l LNDState) lncliArgs() []string {
	return []string{"--network=regtest", "--rpcserver=" + l.RPCAddr, "--tlscertpath=" + l.TLSCertPath, "--macaroonpath=" + l.MacaroonPath}
}
