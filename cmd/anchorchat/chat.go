package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anchorchat/anchorchat/internal/node"
)

func init() {
	register(&command{name: "send", summary: "send an encrypted message or file: send @alice \"hi\", send --file photo.jpg @alice", run: runSend})
	register(&command{name: "chat", summary: "a conversation: history, then live messages; lines you type are sent", run: runChat})
	register(&command{name: "inbox", summary: "conversations with unread counts", run: runInbox})
	register(&command{name: "fetch", summary: "download and decrypt a file message: fetch MESSAGE_ID [-o FILE]", run: runFetch})
}

const sendHelp = `
Sends an end-to-end encrypted NIP-17 message (or, with --file, an encrypted
attachment) through the running node. Recipients are @handle, npub, hex
pubkey or name@domain; several recipients make a group conversation. Without
--file the last argument is the text.`

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("send", "send [--file F] [--expire 1h] [--wait] RECIPIENT... [TEXT]", sendHelp, stdout)
	file := cmd.String("file", "", "send this file as an encrypted attachment")
	expire := cmd.String("expire", "", "make this message disappear after a duration (e.g. 30s, 24h)")
	wait := cmd.Bool("wait", false, "wait until a relay has acknowledged the message; exit status 1 if it failed on every relay")
	asJSON := cmd.Bool("json", false, "print the message as JSON")
	c, err := cmd.dial(args, func(rest []string) error {
		switch {
		case *file != "" && len(rest) == 0:
			return errors.New("send --file needs at least one recipient")
		case *file == "" && len(rest) < 2:
			return errors.New(`send needs a recipient and a text: anchorchat send @alice "hi"`)
		}
		return nil
	})
	if err != nil {
		return err
	}
	rest := cmd.Args()
	req := node.SendRequest{Expire: *expire, Wait: *wait}
	if *file != "" {
		data, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		if len(data) > node.MaxFileSize {
			return fmt.Errorf("%s is %d bytes; the limit is %d", *file, len(data), node.MaxFileSize)
		}
		req.To, req.FileName, req.FileData = rest, filepath.Base(*file), base64.StdEncoding.EncodeToString(data)
		req.FileType = mime.TypeByExtension(filepath.Ext(*file))
	} else {
		req.To, req.Text = rest[:len(rest)-1], rest[len(rest)-1]
	}
	var m node.MessageView
	if err := c.Do(ctx, http.MethodPost, "/v1/send", jsonBody(req), &m); err != nil {
		return err
	}
	if *asJSON {
		if err := printJSON(stdout, m); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s  %s\n", m.ID, m.Status)
	}
	if *wait && m.State == "failed" { // no relay took it: not sent
		return fmt.Errorf("message %s not sent: %s", short(m.ID), m.Status)
	}
	return nil
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

const chatHelp = `
Shows a conversation: its history, then new messages as they arrive, with
each contact's identity status and each sent message's delivery state. Lines
typed on standard input are sent to the conversation; end with Ctrl-D or
Ctrl-C. With --no-input it only watches.`

func runChat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("chat", "chat [--limit N] [--no-input] RECIPIENT...", chatHelp, stdout)
	limit := cmd.Int("limit", 50, "how many past messages to show")
	noInput := cmd.Bool("no-input", false, "do not read messages to send from standard input")
	c, err := cmd.dial(args, func(rest []string) error {
		if len(rest) == 0 {
			return errors.New("chat needs the people of the conversation: anchorchat chat @alice")
		}
		return nil
	})
	if err != nil {
		return err
	}
	with := cmd.Args()
	q := url.Values{"with": {strings.Join(with, ",")}, "limit": {fmt.Sprint(*limit)}}
	var h node.HistoryResponse
	if err := c.Do(ctx, http.MethodGet, "/v1/history?"+q.Encode(), nil, &h); err != nil {
		return err
	}
	for _, p := range h.Conversation.Peers {
		fmt.Fprintf(stdout, "— %s (%s)\n", p.Name, p.Status)
	}
	if h.Conversation.Disappear != "" {
		fmt.Fprintf(stdout, "— messages disappear after %s\n", h.Conversation.Disappear)
	}
	for _, m := range h.Messages {
		printMessage(stdout, m)
	}
	_ = c.Do(ctx, http.MethodPost, "/v1/read?"+q.Encode(), nil, nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !*noInput {
		go func() {
			defer cancel()
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				text := strings.TrimSpace(sc.Text())
				if text == "" {
					continue
				}
				var m node.MessageView
				if err := c.Do(ctx, http.MethodPost, "/v1/send", jsonBody(node.SendRequest{To: with, Text: text}), &m); err != nil {
					fmt.Fprintln(stderr, "not sent:", err)
				}
			}
		}()
	}
	return watch(ctx, c, q, func(ev node.WatchEvent) {
		switch {
		case ev.Type == "message" && ev.Message != nil:
			printMessage(stdout, ev.Message)
			_ = c.Do(ctx, http.MethodPost, "/v1/read?"+q.Encode(), nil, nil)
		case ev.Type == "state" && ev.Message != nil:
			fmt.Fprintf(stdout, "   (%s: %s)\n", short(ev.MessageID), ev.Message.Status)
		case ev.Type == "deleted":
			fmt.Fprintf(stdout, "   (%s was deleted by its sender)\n", short(ev.MessageID))
		case ev.Type == "expired":
			fmt.Fprintf(stdout, "   (%s disappeared)\n", short(ev.MessageID))
		}
	})
}

// watch streams the node's events for a conversation until ctx ends.
func watch(ctx context.Context, c *node.Client, q url.Values, fn func(node.WatchEvent)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/v1/watch?"+url.Values{"with": q["with"]}.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req) // no timeout: a stream
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("node API unreachable: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("node API: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev node.WatchEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) { // the node ends its streams when it stops
				return errors.New("the node stopped")
			}
			return fmt.Errorf("watching: %w", err)
		}
		fn(ev)
	}
}

func printMessage(w io.Writer, m *node.MessageView) {
	who := m.SenderName
	if m.Outgoing {
		who = "me"
	} else if who == "" {
		who = short(m.Sender)
	}
	body := m.Text
	if m.Kind >= 3790 && m.Kind <= 3793 { // tip protocol messages
		body = tipLine(m)
	} else if m.File != nil {
		body = fmt.Sprintf("[file %q, %s, %d bytes, on %s: anchorchat fetch %s]", m.File.Name, m.File.Type, m.File.Size, fileHost(m.File.URL), m.ID)
	}
	line := fmt.Sprintf("%s %s: %s", m.CreatedAt.Local().Format("2006-01-02 15:04"), who, body)
	if m.Outgoing {
		line += "   (" + m.Status + ")"
	}
	if !m.ExpiresAt.IsZero() {
		line += fmt.Sprintf("   [disappears %s]", m.ExpiresAt.Local().Format(time.Kitchen))
	}
	fmt.Fprintln(w, line)
}

// fileHost is the host a file message's blob is served from, so the user
// sees whose server a fetch will contact.
func fileHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "an unknown host"
	}
	return u.Host
}

// tipLine renders a tip protocol message: the request with the tip's
// current state, and the later steps briefly.
func tipLine(m *node.MessageView) string {
	state := ""
	if m.Tip != nil {
		state = " — " + m.Tip.Status
	}
	switch m.Kind {
	case 3790:
		amount := ""
		if m.Tip != nil {
			amount = fmt.Sprintf(" of %d sat", m.Tip.AmountSat)
		}
		return fmt.Sprintf("⚡ tip%s: %q%s", amount, m.Text, state)
	case 3791:
		return "⚡ (invoice for the tip)" + state
	case 3792:
		return "⚡ (receipt: paid)" + state
	default:
		return "⚡ (tip status)" + state
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func runInbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("inbox", "inbox [--json]", "Lists the conversations, most recent first, with unread counts.", stdout)
	asJSON := cmd.Bool("json", false, "print JSON")
	c, err := cmd.dialNoArgs(args)
	if err != nil {
		return err
	}
	var convs []node.ConversationView
	if err := c.Do(ctx, http.MethodGet, "/v1/conversations", nil, &convs); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, convs)
	}
	if len(convs) == 0 {
		fmt.Fprintln(stdout, "no conversations yet: anchorchat send @someone \"hello\"")
	}
	for _, cv := range convs {
		var who []string
		for _, p := range cv.Peers {
			who = append(who, fmt.Sprintf("%s (%s)", p.Name, p.Status))
		}
		fmt.Fprintf(stdout, "%3d unread  %4d messages  %s  %s\n", cv.Unread, cv.Messages, cv.LastAt.Local().Format("2006-01-02 15:04"), strings.Join(who, ", "))
	}
	return nil
}

func runFetch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("fetch", "fetch MESSAGE_ID [-o FILE]", "Downloads a file message's attachment, checks its hash and decrypts it.", stdout)
	out := cmd.String("o", "", "write to this file (default: the sender's file name in the current directory)")
	// Flags may come before or after the id (fetch ID -o FILE).
	var ids []string
	for {
		if err := cmd.Parse(args); err != nil {
			return err
		}
		if cmd.NArg() == 0 {
			break
		}
		ids, args = append(ids, cmd.Arg(0)), cmd.Args()[1:]
	}
	if len(ids) != 1 {
		return errors.New("fetch needs one message id")
	}
	c, err := dialNode(*cmd.network, *cmd.datadir)
	if err != nil {
		return err
	}
	resp, err := c.Response(ctx, http.MethodGet, "/v1/file?id="+url.QueryEscape(ids[0]), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	name := *out
	if name == "" {
		_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Disposition"))
		name = filepath.Base(params["filename"])
		if name == "" || name == "." || name == "/" {
			name = filepath.Base(ids[0])
		}
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s (%d bytes)\n", name, n)
	return nil
}

func init() {
	register(&command{name: "delete", summary: "delete a message you sent, for everyone in the conversation: delete MESSAGE_ID", run: runDelete})
	register(&command{name: "disappear", summary: "set a conversation's disappearing timer: disappear @bob 1h (or off)", run: runDisappear})
}

func runDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("delete", "delete MESSAGE_ID", "Deletes a message you sent: a kind 5 deletion is gift-wrapped to everyone in the conversation, whose nodes remove it.", stdout)
	c, err := cmd.dial(args, nArgs(1, "delete needs one message id (see `anchorchat chat` or `send --json`)"))
	if err != nil {
		return err
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/delete", jsonBody(map[string]string{"id": cmd.Arg(0)}), nil); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "deleted", cmd.Arg(0))
	return nil
}

func runDisappear(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := newClientCommand("disappear", "disappear RECIPIENT... DURATION|off", "Sets how long new messages in a conversation live (NIP-40 expiration on each seal and wrap); off turns it off.", stdout)
	c, err := cmd.dial(args, func(rest []string) error {
		if len(rest) < 2 {
			return errors.New("disappear needs the people of the conversation and a duration: anchorchat disappear @bob 24h")
		}
		return nil
	})
	if err != nil {
		return err
	}
	rest := cmd.Args()
	var res map[string]string
	body := map[string]any{"with": rest[:len(rest)-1], "after": rest[len(rest)-1]}
	if err := c.Do(ctx, http.MethodPost, "/v1/disappearing", jsonBody(body), &res); err != nil {
		return err
	}
	if res["disappear"] == "0s" {
		fmt.Fprintln(stdout, "messages in this conversation no longer disappear")
	} else {
		fmt.Fprintf(stdout, "new messages in this conversation disappear after %s\n", res["disappear"])
	}
	return nil
}
