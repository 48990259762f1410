package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/anchorchat/anchorchat/internal/node"
)

func init() {
	register(&command{name: "tip", summary: "tip a contact over Lightning inside your conversation: tip @bob 1000 \"thanks\"", run: runTip})
	register(&command{name: "payments", summary: "sent and received tips with their states; payments cancel TIP_ID", run: runPayments})
}

const tipHelp = `
Sends a Lightning tip through your own LND, inside the encrypted conversation:
a tip request goes to the recipient's node, which answers with an invoice
whose description hash commits to the request; your node checks amount,
description hash, payee and expiry, pays within the limits of the
payments.* settings, and sends the receipt. With --keysend (or when the
recipient's node does not answer and their handle claim names an LND node),
it pays by keysend instead. Tips are idempotent by tip id: a replayed or
duplicated request never pays twice.`

func runTip(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("tip", "tip [--keysend] [--wait] RECIPIENT AMOUNT_SAT [MEMO]", tipHelp, stdout)
	keysend := cmd.Bool("keysend", false, "pay by keysend to the LND node named in the recipient's handle claim")
	wait := cmd.Bool("wait", false, "wait until the tip is settled, failed or cancelled (at most 2 minutes)")
	asJSON := cmd.Bool("json", false, "print the tip as JSON")
	var amount int64
	c, err := cmd.dial(args, func(rest []string) error {
		if len(rest) < 2 || len(rest) > 3 {
			return errors.New(`tip needs a recipient and an amount in sat, and may take a memo: anchorchat tip @bob 1000 "thanks"`)
		}
		n, err := strconv.ParseInt(rest[1], 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("the amount is a positive number of sat, not %q", rest[1])
		}
		amount = n
		return nil
	})
	if err != nil {
		return err
	}
	rest := cmd.Args()
	req := node.TipRequest{To: rest[0], AmountSat: amount, Keysend: *keysend}
	if len(rest) == 3 {
		req.Memo = rest[2]
	}
	var t node.TipView
	if err := c.Do(ctx, http.MethodPost, "/v1/tip", jsonBody(req), &t); err != nil {
		return err
	}
	if *wait {
		deadline := time.Now().Add(2 * time.Minute)
		for !tipFinal(t.State) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
			if err := c.Do(ctx, http.MethodGet, "/v1/tip?id="+url.QueryEscape(t.ID), nil, &t); err != nil {
				return err
			}
		}
	}
	if *asJSON {
		return printJSON(stdout, t)
	}
	fmt.Fprintf(stdout, "%s  %d sat  %s\n", t.ID, t.AmountSat, t.Status)
	if *wait && t.State == "failed" {
		return errors.New("the tip failed: " + t.Status)
	}
	return nil
}

func tipFinal(state string) bool {
	return state == "settled" || state == "failed" || state == "cancelled"
}

func runPayments(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "cancel" {
		cmd := newClientCommand("payments cancel", "payments cancel TIP_ID", "Cancels a tip that has not started paying.", stdout)
		c, err := cmd.dial(args[1:], nArgs(1, "payments cancel needs one tip id"))
		if err != nil {
			return err
		}
		var t node.TipView
		if err := c.Do(ctx, http.MethodPost, "/v1/tip/cancel", jsonBody(map[string]string{"id": cmd.Arg(0)}), &t); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s  %s\n", t.ID, t.Status)
		return nil
	}
	cmd := newClientCommand("payments", "payments [--limit N] [--json] | payments cancel TIP_ID", "Lists sent and received tips, newest first, with their states.", stdout)
	limit := cmd.Int("limit", 50, "how many tips to list")
	asJSON := cmd.Bool("json", false, "print JSON")
	c, err := cmd.dialNoArgs(args)
	if err != nil {
		return err
	}
	var tips []node.TipView
	if err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/payments?limit=%d", *limit), nil, &tips); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, tips)
	}
	if len(tips) == 0 {
		fmt.Fprintln(stdout, `no tips yet: anchorchat tip @someone 1000 "thanks"`)
	}
	for _, t := range tips {
		dir := "to  "
		if !t.Outgoing {
			dir = "from"
		}
		fmt.Fprintf(stdout, "%s  %s %s  %8d sat  %-40s %q\n", t.CreatedAt.Local().Format("2006-01-02 15:04"), dir, short(t.Peer), t.AmountSat, t.Status, t.Memo)
	}
	return nil
}
