package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/internal/node"
)

func init() {
	register(&command{name: "anchor", summary: "anchor handle claims on Bitcoin: anchor now | anchor batches", run: runAnchor})
	register(&command{name: "verify", summary: "verify a contact's handle against Bitcoin block headers: verify @alice | npub | name@domain", run: runVerify})
	register(&command{name: "wallet", summary: "the anchoring wallet: an address to fund it, and its balance", run: runWallet})
}

const anchorHelp = `
The node batches handle claims (its owner's, and with anchor.accept-others
those others publish to its relay) into a Merkle tree and commits the root in
one OP_RETURN output of one Bitcoin transaction, every anchor.interval or at
anchor.max-batch claims; once the transaction has anchor.confirmations, it
publishes an attestation (a self-contained proof) for each claim.

  anchor now       anchor every pending claim now; prints the batches made
  anchor batches   the batches: root, claims, state, txid, fee, height`

func runAnchor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "now" && args[0] != "batches") {
		help := len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help")
		out := stderr
		if help {
			out = stdout
		}
		fmt.Fprintf(out, "Usage: anchorchat anchor now|batches [--network N] [--datadir DIR] [--json]\n%s\n", anchorHelp)
		if help {
			return nil
		}
		return errors.New("anchor needs a subcommand: now or batches")
	}
	cmd := newClientCommand("anchor "+args[0], "anchor "+args[0]+" [--json]", anchorHelp, stdout)
	asJSON := cmd.Bool("json", false, "print JSON")
	c, err := cmd.dialNoArgs(args[1:])
	if err != nil {
		return err
	}
	var batches []anchor.BatchInfo
	if args[0] == "now" {
		err = c.Do(ctx, http.MethodPost, "/v1/anchor/now", nil, &batches)
	} else {
		err = c.Do(ctx, http.MethodGet, "/v1/anchor/batches", nil, &batches)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, batches)
	}
	if len(batches) == 0 {
		fmt.Fprintln(stdout, "no batches yet")
	}
	for _, b := range batches {
		fmt.Fprintf(stdout, "batch %d  %d claims  %-10s tx %s  fee %d sat", b.ID, b.Claims, b.State, b.Txid, b.Fee)
		if b.Height > 0 {
			fmt.Fprintf(stdout, "  height %d", b.Height)
		}
		fmt.Fprintf(stdout, "\n  root %s\n", b.Root)
	}
	return nil
}

const verifyHelp = `
Fetches a contact's handle claims and attestations from relays and checks
every step against Bitcoin through the node's btcd: the claim's Merkle path
to the anchored root, the root in the transaction's OP_RETURN, the
transaction's branch to the block's merkle root, the block in the best chain
and its confirmations. Then the rules: the earliest anchored claim of a handle
wins; only the current key rotates or revokes. Verdicts: VERIFIED, PENDING
(too few confirmations, or a rotation not yet anchored that deep), UNANCHORED, CONFLICT (someone else holds the handle),
REVOKED, INVALID (with the step that failed). The exit status is 0 only for
VERIFIED.`

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("verify", "verify [--json] @handle|npub|name@domain", verifyHelp, stdout)
	asJSON := cmd.Bool("json", false, "print the verdict as JSON")
	c, err := cmd.dial(args, nArgs(1, "verify needs one handle, npub or name@domain"))
	if err != nil {
		return err
	}
	var v anchor.Verdict
	if err := c.Do(ctx, http.MethodGet, "/v1/verify?q="+url.QueryEscape(cmd.Arg(0)), nil, &v); err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, v); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(stdout, v.String())
	}
	if v.Status != anchor.Verified {
		return fmt.Errorf("not verified: %s", v.Status)
	}
	return nil
}

func runWallet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("wallet", "wallet [--json]", "Shows a fresh receiving address of the node's anchoring wallet and its balance. Fund it with a little bitcoin to anchor handle claims (one small transaction per batch).", stdout)
	asJSON := cmd.Bool("json", false, "print JSON")
	c, err := cmd.dialNoArgs(args)
	if err != nil {
		return err
	}
	var wv node.WalletView
	if err := c.Do(ctx, http.MethodGet, "/v1/wallet", nil, &wv); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, wv)
	}
	fmt.Fprintf(stdout, "address:     %s\nconfirmed:   %d sat\nunconfirmed: %d sat\n", wv.Address, wv.Confirmed, wv.Unconfirmed)
	return nil
}
