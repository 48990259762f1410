package chat

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// FileInfo is the metadata of a kind 15 file message.
type FileInfo struct {
	URL       string // where the encrypted blob is served
	Type      string // MIME type of the original file
	Algorithm string // "aes-gcm"
	Key       string // hex AES-256 key
	Nonce     string // hex GCM nonce
	SHA256    string // x: hash of the encrypted blob
	OrigHash  string // ox: hash of the original file
	Size      int64  // size of the encrypted blob in bytes
	Name      string // original file name, if given
}

func fileFromTags(content string, tags nostr.Tags) *FileInfo {
	f := &FileInfo{
		URL: content, Type: tagValue(tags, "file-type"), Algorithm: tagValue(tags, "encryption-algorithm"),
		Key: tagValue(tags, "decryption-key"), Nonce: tagValue(tags, "decryption-nonce"),
		SHA256: tagValue(tags, "x"), OrigHash: tagValue(tags, "ox"), Name: tagValue(tags, "name"),
	}
	f.Size, _ = strconv.ParseInt(tagValue(tags, "size"), 10, 64)
	return f
}

// FileOptions describe a file to send.
type FileOptions struct {
	Name string // shown to the recipient (optional)
	Type string // MIME type (default application/octet-stream)
}

// EncryptFile encrypts data with a fresh AES-256-GCM key and 12-byte nonce
// and returns the blob (ciphertext with the GCM tag appended) and the
// metadata for the kind 15 rumor.
func EncryptFile(data []byte) ([]byte, *FileInfo, error) {
	key := make([]byte, 32)
	nonce := make([]byte, 12)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	blob := gcm.Seal(nil, nonce, data, nil)
	x := sha256.Sum256(blob)
	ox := sha256.Sum256(data)
	return blob, &FileInfo{
		Algorithm: "aes-gcm", Key: hex.EncodeToString(key), Nonce: hex.EncodeToString(nonce),
		SHA256: hex.EncodeToString(x[:]), OrigHash: hex.EncodeToString(ox[:]), Size: int64(len(blob)),
	}, nil
}

// blobOverhead is how much larger than its file a blob may be: AES-GCM
// adds its 16-byte tag (other clients' schemes a little more). The blob
// store accepts, and FetchFile downloads, blobs of up to the file size
// limit plus this.
const blobOverhead = 64

// decodeParam accepts hex (what we send) or base64/base64url (what some
// clients send).
func decodeParam(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("neither hex nor base64")
}

// DecryptFile checks the blob's hash (x, required), decrypts it and checks
// the original's hash (ox) when present. Nonces of 12 or 16 bytes are
// accepted.
func DecryptFile(blob []byte, f *FileInfo) ([]byte, error) {
	if f.Algorithm != "" && f.Algorithm != "aes-gcm" {
		return nil, fmt.Errorf("chat: unsupported file encryption %q", f.Algorithm)
	}
	if f.SHA256 == "" {
		return nil, errors.New("chat: the file message names no hash (x tag) of its blob")
	}
	x := sha256.Sum256(blob)
	if !strings.EqualFold(hex.EncodeToString(x[:]), f.SHA256) {
		return nil, errors.New("chat: file hash mismatch: the blob is not the one the sender named")
	}
	key, err := decodeParam(f.Key)
	if err != nil || len(key) != 32 && len(key) != 16 && len(key) != 24 {
		return nil, fmt.Errorf("chat: bad decryption key")
	}
	nonce, err := decodeParam(f.Nonce)
	if err != nil || len(nonce) < 12 {
		return nil, fmt.Errorf("chat: bad decryption nonce")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, len(nonce))
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	data, err := gcm.Open(nil, nonce, blob, nil)
	if err != nil {
		return nil, fmt.Errorf("chat: file decryption failed: %w", err)
	}
	if f.OrigHash != "" {
		ox := sha256.Sum256(data)
		if !strings.EqualFold(hex.EncodeToString(ox[:]), f.OrigHash) {
			return nil, errors.New("chat: decrypted file hash mismatch")
		}
	}
	return data, nil
}

// SendFile encrypts r's content, uploads the blob to Config.BlobURL and
// sends a kind 15 file message pointing at it.
func (s *Service) SendFile(ctx context.Context, recipients []string, r io.Reader, fo FileOptions, opts SendOptions) (*Message, error) {
	if s.cfg.BlobURL == "" {
		return nil, errors.New("chat: no blob store configured (Config.BlobURL)")
	}
	data, err := io.ReadAll(io.LimitReader(r, s.cfg.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("chat: read file: %w", err)
	}
	if int64(len(data)) > s.cfg.MaxFileSize {
		return nil, fmt.Errorf("chat: file larger than %d bytes", s.cfg.MaxFileSize)
	}
	blob, fi, err := EncryptFile(data)
	if err != nil {
		return nil, fmt.Errorf("chat: encrypt file: %w", err)
	}
	url, err := s.upload(ctx, blob, fi.SHA256)
	if err != nil {
		return nil, err
	}
	typ := fo.Type
	if typ == "" {
		typ = "application/octet-stream"
	}
	tags := nostr.Tags{
		{"file-type", typ},
		{"encryption-algorithm", fi.Algorithm},
		{"decryption-key", fi.Key},
		{"decryption-nonce", fi.Nonce},
		{"x", fi.SHA256},
		{"ox", fi.OrigHash},
		{"size", strconv.FormatInt(fi.Size, 10)},
	}
	if fo.Name != "" {
		tags = append(tags, nostr.Tag{"name", fo.Name})
	}
	return s.send(ctx, recipients, KindFileMessage, url, tags, opts)
}

// BlobAuth makes a BUD-02 upload authorisation (kind 24242) for a blob
// with the given sha256, valid for ttl, signed by sign.
func BlobAuth(sign func(*nostr.Event) error, sha string, size int64, now time.Time, ttl time.Duration) (string, error) {
	evt := &nostr.Event{
		Kind: KindBlobAuth, Content: "Upload blob", CreatedAt: nostr.Timestamp(now.Unix()),
		Tags: nostr.Tags{{"t", "upload"}, {"x", sha}, {"size", strconv.FormatInt(size, 10)}, expirationTag(now.Add(ttl).Unix())},
	}
	if err := sign(evt); err != nil {
		return "", err
	}
	return "Nostr " + base64.StdEncoding.EncodeToString([]byte(evt.String())), nil
}

func (s *Service) upload(ctx context.Context, blob []byte, sha string) (string, error) {
	auth, err := BlobAuth(s.sign, sha, int64(len(blob)), s.now(), 5*time.Minute)
	if err != nil {
		return "", fmt.Errorf("chat: sign upload: %w", err)
	}
	base := strings.TrimSuffix(s.cfg.BlobURL, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/upload", bytes.NewReader(blob))
	if err != nil {
		return "", fmt.Errorf("chat: upload: %w", err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-SHA-256", sha)
	resp, err := s.httpc.Do(req)
	if err != nil {
		return "", fmt.Errorf("chat: upload: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("chat: upload refused: %s: %s", resp.Status, firstNonEmpty(resp.Header.Get("X-Reason"), string(body)))
	}
	var d BlobDescriptor
	if err := json.Unmarshal(body, &d); err != nil {
		return "", fmt.Errorf("chat: upload: bad descriptor: %w", err)
	}
	if d.SHA256 != sha {
		return "", fmt.Errorf("chat: upload: server stored %s, expected %s", d.SHA256, sha)
	}
	if d.URL == "" {
		d.URL = base + "/" + sha
	}
	return d.URL, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// FetchFile downloads a file message's blob, checks its hash and decrypts it.
func (s *Service) FetchFile(ctx context.Context, m *Message) ([]byte, error) {
	if m.File == nil {
		return nil, errors.New("chat: not a file message")
	}
	if m.File.SHA256 == "" {
		return nil, errors.New("chat: the file message names no hash (x tag) of its blob")
	}
	url, client := m.File.URL, s.dl
	if local, ok := s.ownBlob(url); ok {
		url, client = local, s.httpc
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("chat: download: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, ErrPrivateAddress) {
			return nil, fmt.Errorf("chat: download refused: %w", err)
		}
		return nil, fmt.Errorf("chat: download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("chat: download %s: %s", m.File.URL, resp.Status)
	}
	limit := s.cfg.MaxFileSize + blobOverhead
	blob, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("chat: download: %w", err)
	}
	if int64(len(blob)) > limit {
		return nil, errors.New("chat: download larger than the file size limit")
	}
	return DecryptFile(blob, m.File)
}

// ownBlob maps a URL under this node's own blob store (BlobURL or
// BlobPublicURL) to the blob's address under BlobURL.
func (s *Service) ownBlob(url string) (string, bool) {
	if s.cfg.BlobURL == "" {
		return "", false
	}
	for _, base := range []string{s.cfg.BlobURL, s.cfg.BlobPublicURL} {
		if base == "" {
			continue
		}
		rest, ok := strings.CutPrefix(url, strings.TrimSuffix(base, "/")+"/")
		if !ok {
			continue
		}
		sha, _, _ := strings.Cut(rest, ".")
		if isHash(sha) && !strings.ContainsAny(rest, "/?#%") {
			return strings.TrimSuffix(s.cfg.BlobURL, "/") + "/" + sha, true // the store serves a blob by its hash alone
		}
	}
	return "", false
}
