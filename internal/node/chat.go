package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/payments"
)

// File names inside the data dir.
const (
	ChatDBFile = "chat.db"
	BlobsDir   = "blobs"
)

// MaxFileSize bounds attachments sent and served.
const MaxFileSize = 32 << 20

// setupChat creates the messenger and mounts the blob store; it runs before
// the servers start, and the messenger starts once the relay listens. It needs
// the identity: without one the node runs as a relay only.
func (n *Node) setupChat(mux *http.ServeMux) error {
	if n.key == nil {
		return nil
	}
	blobs, err := chat.NewBlobStore(chat.BlobConfig{
		Dir: filepath.Join(n.cfg.DataDir, BlobsDir), Owner: n.cfg.Relay.Owner, Allow: n.cfg.Relay.Allow,
		MaxSize: MaxFileSize, PublicURL: n.PublicHTTPURL() + "/blobs", Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	mux.Handle("/blobs/", http.StripPrefix("/blobs", blobs))
	local := newLocalClient(n.RelayURL())
	n.relay.Exempt = local.exempt
	n.chat, err = chat.New(chat.Config{
		Key:      n.key,
		RelayURL: n.RelayURL(),
		Dial:     local.dial,
		DBPath:   filepath.Join(n.cfg.DataDir, ChatDBFile),
		Logger:   n.log,
		// The inbox is the relays the node publishes as its kind 10050
		// list, from the start: looked up on the own relay instead, a new
		// or changed --dm-relays took effect only at the next start (the
		// list is published after the messenger starts).
		InboxRelays:           append([]string{n.RelayURL()}, n.dmRelays()...),
		DiscoveryRelays:       n.cfg.PublishRelays,
		FallbackRelays:        n.cfg.PublishRelays,
		BlobURL:               n.HTTPURL() + "/blobs",
		BlobPublicURL:         n.PublicHTTPURL() + "/blobs",
		DeleteBlob:            blobs.Delete,
		AllowPrivateFileHosts: n.cfg.AllowPrivateFileHosts,
		AllowPrivateRelays:    n.cfg.AllowPrivateRelays,
		MaxFileSize:           MaxFileSize,
		Resolver:              &identity.Resolver{},
		PurgeInterval:         5 * time.Second, // disappearing messages go within seconds of expiring
		Verdict:               n.verdict(),
	})
	if err != nil {
		return fmt.Errorf("messenger: %w", err)
	}
	return nil
}

// verdict is the chat contacts' on-chain identity verdict, when this node can verify.
func (n *Node) verdict() func(ctx context.Context, pubkey, handle string) string {
	if n.verifier == nil {
		return nil
	}
	return n.verifier.Hook
}

// API views: what the CLI sees of messages and conversations (never a file key).

// MessageView is a message as the local API shows it.
type MessageView struct {
	ID           string    `json:"id"`
	Conversation string    `json:"conversation"`
	Sender       string    `json:"sender"`
	SenderName   string    `json:"sender_name,omitempty"`
	Kind         int       `json:"kind"`
	Text         string    `json:"text,omitempty"`
	File         *FileView `json:"file,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Outgoing     bool      `json:"outgoing"`
	Read         bool      `json:"read"`
	State        string    `json:"state"`
	Status       string    `json:"status"`
	Tip          *TipView  `json:"tip,omitempty"` // a tip protocol message, with the tip's current state
}

// FileView describes an attachment.
type FileView struct {
	Name string `json:"name,omitempty"`
	Type string `json:"type"`
	Size int64  `json:"size"`
	URL  string `json:"url"` // where the encrypted blob is served (the sender's choice)
}

// ConversationView is a conversation as the local API shows it.
type ConversationView struct {
	ID        string        `json:"id"`
	Peers     []ContactView `json:"peers"`
	Subject   string        `json:"subject,omitempty"`
	Disappear string        `json:"disappear,omitempty"`
	LastAt    time.Time     `json:"last_at"`
	Unread    int           `json:"unread"`
	Messages  int           `json:"messages"`
}

// ContactView is a conversation partner and their identity status.
type ContactView struct {
	PubKey string `json:"pubkey"`
	Name   string `json:"name"`
	Status string `json:"status"`
}

// WatchEvent is one line of GET /v1/watch.
type WatchEvent struct {
	Type         string       `json:"type"`
	Conversation string       `json:"conversation"`
	MessageID    string       `json:"message_id"`
	Message      *MessageView `json:"message,omitempty"`
}

func messageView(m *chat.Message, names map[string]string) *MessageView {
	v := &MessageView{
		ID: m.ID, Conversation: m.Conversation, Sender: m.Sender, SenderName: names[m.Sender], Kind: m.Kind,
		CreatedAt: m.CreatedAt, ExpiresAt: m.ExpiresAt, Outgoing: m.Outgoing, Read: m.Read,
		State: string(m.State), Status: m.Status(),
	}
	if m.File != nil {
		v.File = &FileView{Name: m.File.Name, Type: m.File.Type, Size: m.File.Size, URL: m.File.URL}
	} else {
		v.Text = m.Content
	}
	return v
}

func conversationView(c *chat.Conversation) ConversationView {
	v := ConversationView{ID: c.ID, Subject: c.Subject, LastAt: c.LastAt, Unread: c.Unread, Messages: c.Messages}
	if c.Disappear > 0 {
		v.Disappear = c.Disappear.String()
	}
	for _, p := range c.Peers {
		v.Peers = append(v.Peers, ContactView{PubKey: p.PubKey, Name: p.Name(), Status: p.Status()})
	}
	return v
}

// SendRequest is the body of POST /v1/send.
type SendRequest struct {
	To       []string `json:"to"`
	Text     string   `json:"text,omitempty"`
	Expire   string   `json:"expire,omitempty"` // a Go duration; "" uses the conversation's timer
	FileName string   `json:"file_name,omitempty"`
	FileType string   `json:"file_type,omitempty"`
	FileData string   `json:"file_data,omitempty"` // base64
	Wait     bool     `json:"wait,omitempty"`      // answer once sent to a relay (or failed)
}

// HistoryResponse is the answer of GET /v1/history.
type HistoryResponse struct {
	Conversation ConversationView `json:"conversation"`
	Messages     []*MessageView   `json:"messages"`
}

func (n *Node) chatRoutes(mux *http.ServeMux) {
	need := requires(func() bool { return n.chat != nil }, "this node has no identity, so no messenger: run `anchorchat init`")
	mux.HandleFunc("POST /v1/send", need(n.apiSend))
	mux.HandleFunc("GET /v1/conversations", need(n.apiConversations))
	mux.HandleFunc("GET /v1/history", need(n.apiHistory))
	mux.HandleFunc("GET /v1/watch", need(n.apiWatch))
	mux.HandleFunc("POST /v1/read", need(n.apiRead))
	mux.HandleFunc("POST /v1/delete", need(n.apiDelete))
	mux.HandleFunc("POST /v1/disappearing", need(n.apiDisappearing))
	mux.HandleFunc("GET /v1/file", need(n.apiFile))
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxFileSize*2))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

func (n *Node) apiSend(w http.ResponseWriter, r *http.Request) {
	var req SendRequest
	if err := decodeBody(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if len(req.To) == 0 {
		apiError(w, http.StatusBadRequest, errors.New("no recipient"))
		return
	}
	var opts chat.SendOptions
	if req.Expire != "" {
		d, err := time.ParseDuration(req.Expire)
		if err != nil || d <= 0 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("expire must be a positive duration like 30s or 24h, not %q", req.Expire))
			return
		}
		opts.Expire = d
	}
	contacts, err := n.chat.ResolveAll(r.Context(), req.To)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	to := make([]string, len(contacts))
	others := map[string]bool{}
	for i, c := range contacts {
		to[i] = c.PubKey
		if c.PubKey != n.key.PublicKey() {
			others[c.PubKey] = true
		}
	}
	// What the messenger refuses for what was asked is the client's
	// mistake (4xx); its other failures are a relay's or a file host's.
	switch {
	case len(others) == 0:
		apiError(w, http.StatusBadRequest, errors.New("no recipient other than this node's own key"))
		return
	case len(others) > chat.MaxParticipants-1:
		apiError(w, http.StatusBadRequest, fmt.Errorf("%d recipients; a conversation holds at most %d besides you", len(others), chat.MaxParticipants-1))
		return
	}
	var m *chat.Message
	if req.FileData != "" {
		data, err := base64.StdEncoding.DecodeString(req.FileData)
		if err != nil {
			apiError(w, http.StatusBadRequest, fmt.Errorf("file_data is not base64: %w", err))
			return
		}
		if len(data) > MaxFileSize {
			apiError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("the file is %d bytes; the limit is %d", len(data), MaxFileSize))
			return
		}
		m, err = n.chat.SendFile(r.Context(), to, bytes.NewReader(data), chat.FileOptions{Name: req.FileName, Type: req.FileType}, opts)
		if err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
	} else {
		if strings.TrimSpace(req.Text) == "" {
			apiError(w, http.StatusBadRequest, errors.New("empty message"))
			return
		}
		if m, err = n.chat.Send(r.Context(), to, req.Text, opts); err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
	}
	if req.Wait {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if sent, err := n.chat.WaitSent(ctx, m.ID); err == nil {
			m = sent
		}
	}
	writeJSON(w, messageView(m, nil))
}

func (n *Node) apiConversations(w http.ResponseWriter, r *http.Request) {
	convs, err := n.chat.Conversations(r.Context())
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	out := make([]ConversationView, 0, len(convs))
	for _, c := range convs {
		out = append(out, conversationView(c))
	}
	writeJSON(w, out)
}

// conversation finds the conversation with the people named in ?with= (comma-separated).
func (n *Node) conversation(r *http.Request) (*chat.Conversation, error) {
	with := strings.Split(r.URL.Query().Get("with"), ",")
	if len(with) == 0 || with[0] == "" {
		return nil, errors.New("name the conversation with ?with=@handle,npub1...")
	}
	id, _, err := n.chat.ConversationWith(r.Context(), with)
	if err != nil {
		return nil, err
	}
	convs, err := n.chat.Conversations(r.Context())
	if err != nil {
		return nil, err
	}
	for _, c := range convs {
		if c.ID == id {
			return c, nil
		}
	}
	return &chat.Conversation{ID: id}, nil // no messages yet
}

func names(c *chat.Conversation) map[string]string {
	m := map[string]string{}
	for _, p := range c.Peers {
		m[p.PubKey] = p.Name()
	}
	return m
}

func (n *Node) apiHistory(w http.ResponseWriter, r *http.Request) {
	c, err := n.conversation(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	msgs, err := n.chat.History(r.Context(), c.ID, chat.HistoryOptions{Limit: limit})
	if err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	nm := names(c)
	tips := map[string]TipView{}
	if n.pay != nil {
		list, err := n.pay.List(r.Context(), payments.ListOptions{Conversation: c.ID, Limit: 1000})
		if err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		for _, t := range list {
			tips[t.ID] = tipView(t)
		}
	}
	resp := HistoryResponse{Conversation: conversationView(c), Messages: make([]*MessageView, 0, len(msgs))}
	for _, m := range msgs {
		v := messageView(m, nm)
		if t, ok := tips[m.TipID()]; ok {
			v.Tip = &t
		}
		resp.Messages = append(resp.Messages, v)
	}
	writeJSON(w, resp)
}

// apiWatch streams the events of one conversation (or all, without ?with=)
// as JSON lines until the client goes away or the node stops.
func (n *Node) apiWatch(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context() // ends when the node starts to stop, too (Node.stopping)
	var conv *chat.Conversation
	if r.URL.Query().Get("with") != "" {
		var err error
		if conv, err = n.conversation(r); err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	nm := map[string]string{}
	if conv != nil {
		nm = names(conv)
	}
	for ev := range n.chat.Watch(ctx) {
		if conv != nil && ev.Conversation != conv.ID {
			continue
		}
		out := WatchEvent{Type: string(ev.Type), Conversation: ev.Conversation, MessageID: ev.MessageID}
		if ev.Message != nil {
			out.Message = messageView(ev.Message, nm)
			if id := ev.Message.TipID(); id != "" && n.pay != nil {
				if t, err := n.pay.Get(ctx, id); err == nil {
					tv := tipView(t)
					out.Message.Tip = &tv
				}
			}
		}
		if err := enc.Encode(out); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (n *Node) apiRead(w http.ResponseWriter, r *http.Request) {
	c, err := n.conversation(r)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if err := n.chat.MarkRead(r.Context(), c.ID); err != nil {
		apiError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, map[string]string{"conversation": c.ID})
}

func (n *Node) apiDelete(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID string `json:"id"`
	}
	if err := decodeBody(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if err := n.chat.Delete(r.Context(), req.ID); err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, chat.ErrNotFound) {
			code = http.StatusNotFound
		}
		apiError(w, code, err)
		return
	}
	writeJSON(w, map[string]string{"deleted": req.ID})
}

func (n *Node) apiDisappearing(w http.ResponseWriter, r *http.Request) {
	var req struct {
		With  []string `json:"with"`
		After string   `json:"after"` // a duration; "0" or "off" turns it off
	}
	if err := decodeBody(r, &req); err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	if len(req.With) == 0 {
		apiError(w, http.StatusBadRequest, errors.New(`name the conversation's people in "with": ["@handle", "npub1...", ...]`))
		return
	}
	var d time.Duration
	if req.After != "off" && req.After != "0" {
		var err error
		if d, err = time.ParseDuration(req.After); err != nil || d < 0 {
			apiError(w, http.StatusBadRequest, fmt.Errorf("after must be a duration like 1h, or off, not %q", req.After))
			return
		}
	}
	id, err := n.chat.SetDisappearing(r.Context(), req.With, d)
	if err != nil {
		apiError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, map[string]string{"conversation": id, "disappear": d.String()})
}

// apiFile downloads, checks and decrypts a file message's attachment.
func (n *Node) apiFile(w http.ResponseWriter, r *http.Request) {
	m, err := n.chat.Message(r.Context(), r.URL.Query().Get("id"))
	if err != nil {
		apiError(w, http.StatusNotFound, err)
		return
	}
	if m.File == nil {
		apiError(w, http.StatusBadRequest, errors.New("that message has no file"))
		return
	}
	data, err := n.chat.FetchFile(r.Context(), m)
	if errors.Is(err, chat.ErrPrivateAddress) {
		apiError(w, http.StatusForbidden, fmt.Errorf("%w; if you trust this sender's server on your network, run the node with --%s", err, flagAllowPrivateFileHosts))
		return
	}
	if err != nil {
		apiError(w, http.StatusBadGateway, err)
		return
	}
	w.Header().Set("Content-Type", m.File.Type)
	if m.File.Name != "" {
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filepath.Base(m.File.Name)))
	}
	_, _ = w.Write(data)
}
