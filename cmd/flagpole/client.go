package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
)

// Client configuration: flags first, then environment variables, then defaults.
const (
	envURL     = "FLAGPOLE_URL"
	envToken   = "FLAGPOLE_TOKEN"
	envEnv     = "FLAGPOLE_ENV"
	defaultURL = "http://127.0.0.1:8080"
	maxReply   = 64 << 20 // bytes of a response body the client is willing to read
)

// clientFlags are the flags shared by every client command.
type clientFlags struct {
	url     string
	token   string
	output  string
	timeout time.Duration
}

// addClientFlags registers --url, --token, --output and --timeout as
// persistent flags of cmd (inherited by its subcommands).
func (a *app) addClientFlags(cmd *cobra.Command) *clientFlags {
	cf := &clientFlags{}
	pf := cmd.PersistentFlags()
	pf.StringVar(&cf.url, "url", "", "Flagpole server URL (default $"+envURL+" or "+defaultURL+")")
	pf.StringVar(&cf.token, "token", "", "API key (default $"+envToken+")")
	pf.StringVarP(&cf.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&cf.timeout, "timeout", 30*time.Second, "time limit for each request to the server")
	return cf
}

// client validates the client flags and returns an API client. Bad values
// are usage errors.
func (a *app) client(cmd *cobra.Command, cf *clientFlags) (*client, error) {
	if cf.output != "table" && cf.output != "json" {
		return nil, usagef(cmd, "--output %q: must be table or json", cf.output)
	}
	raw := cf.url
	if raw == "" {
		raw = a.getenv(envURL)
	}
	if raw == "" {
		raw = defaultURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef(cmd, "--url %q: must be an http:// or https:// URL with a host (set --url or %s)", raw, envURL)
	}
	token := cf.token
	if token == "" {
		token = a.getenv(envToken)
	}
	token = strings.TrimSpace(token) // pasted keys often carry a line break
	if token == "" {
		return nil, usagef(cmd, "no API key: pass --token or set %s", envToken)
	}
	if strings.ContainsFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return nil, usagef(cmd, "the API key (--token or %s) contains spaces or line breaks; give only the key", envToken)
	}
	if cf.timeout <= 0 {
		return nil, usagef(cmd, "--timeout %s: must be positive", cf.timeout)
	}
	return &client{
		base:   strings.TrimRight(u.String(), "/"),
		token:  token,
		json:   cf.output == "json",
		hc:     &http.Client{Timeout: cf.timeout},
		stdout: a.stdout,
	}, nil
}

// client talks to the Flagpole HTTP API.
type client struct {
	base   string // scheme://host[/prefix], no trailing slash
	token  string
	json   bool // -o json
	hc     *http.Client
	stdout io.Writer
}

// call is one HTTP request to the API. path is already escaped.
type call struct {
	method string
	path   string
	query  url.Values
	header http.Header
	body   []byte
	ctype  string // Content-Type of body; application/json when empty
}

// reply is a successful (2xx or 304) response.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// version is the environment version in the reply's ETag, or 0.
func (r reply) version() int64 {
	v, _ := strconv.ParseInt(strings.Trim(strings.TrimPrefix(r.header.Get("ETag"), "W/"), `"`), 10, 64)
	return v
}

// do sends c and returns the reply; a non-2xx status is an *apiError and a
// failure to reach the server is an error that says where it tried.
func (cl *client) do(ctx context.Context, c call) (reply, error) {
	target := cl.base + c.path
	if len(c.query) > 0 {
		target += "?" + c.query.Encode()
	}
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, target, body)
	if err != nil {
		return reply{}, fmt.Errorf("building the request: %w", err)
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	req.Header.Set("User-Agent", "flagpole-cli")
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if c.body != nil {
		ct := c.ctype
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("cannot reach the Flagpole server at %s (set --url or %s): %w", cl.base, envURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return reply{}, fmt.Errorf("reading the response to %s %s: %w", c.method, c.path, err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotModified {
		return reply{}, decodeAPIError(resp.StatusCode, data)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// getJSON GETs path and decodes the JSON reply into out (when not nil).
func (cl *client) getJSON(ctx context.Context, path string, query url.Values, out any) (reply, error) {
	r, err := cl.do(ctx, call{method: http.MethodGet, path: path, query: query})
	if err != nil {
		return r, err
	}
	return r, decodeReply(r, out)
}

// sendJSON sends in (marshalled to JSON, nil for no body) and decodes the reply into out.
func (cl *client) sendJSON(ctx context.Context, method, path string, w writeOpts, in, out any) (reply, error) {
	c := call{method: method, path: path, header: w.header()}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return reply{}, fmt.Errorf("encoding the request: %w", err)
		}
		c.body = b
	}
	r, err := cl.do(ctx, c)
	if err != nil {
		return r, err
	}
	return r, decodeReply(r, out)
}

func decodeReply(r reply, out any) error {
	if out == nil || len(bytes.TrimSpace(r.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("the server sent a response this client does not understand: %w", err)
	}
	return nil
}

// writeOpts are the options every write command takes.
type writeOpts struct {
	reason  string
	ifMatch int64
}

// addWriteFlags registers --reason and --if-match on cmd.
func addWriteFlags(cmd *cobra.Command, w *writeOpts) {
	cmd.Flags().StringVar(&w.reason, "reason", "", "why: recorded in the audit log (sent as X-Change-Reason)")
	cmd.Flags().Int64Var(&w.ifMatch, "if-match", 0, "only write if what is written is still at this version (its ETag)")
}

// check reports a bad --reason or --if-match as a usage error.
func (w writeOpts) check(cmd *cobra.Command) error {
	if strings.ContainsFunc(w.reason, unicode.IsControl) {
		return usagef(cmd, "--reason: must be a single line without control characters")
	}
	if w.ifMatch < 0 {
		return usagef(cmd, "--if-match %d: must be a positive version", w.ifMatch)
	}
	return nil
}

func (w writeOpts) header() http.Header {
	h := http.Header{}
	if w.reason != "" {
		h.Set("X-Change-Reason", w.reason)
	}
	if w.ifMatch > 0 {
		h.Set("If-Match", `"`+strconv.FormatInt(w.ifMatch, 10)+`"`)
	}
	return h
}

// apiError is an error response of the API.
type apiError struct {
	Status  int
	Code    string
	Message string
	Details []errorDetail
}

type errorDetail struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func (e *apiError) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	fmt.Fprintf(&b, " (HTTP %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	b.WriteString(")")
	for _, d := range e.Details {
		b.WriteString("\n  ")
		if d.Field != "" {
			b.WriteString(d.Field + ": ")
		}
		b.WriteString(d.Problem)
	}
	return b.String()
}

// decodeAPIError reads either error shape the server uses: the API's
// {"error":{code,message,details}} or OFREP's {key,errorCode,errorDetails}.
func decodeAPIError(status int, body []byte) *apiError {
	var wire struct {
		Error *struct {
			Code    string        `json:"code"`
			Message string        `json:"message"`
			Details []errorDetail `json:"details"`
		} `json:"error"`
		Key          string `json:"key"`
		ErrorCode    string `json:"errorCode"`
		ErrorDetails string `json:"errorDetails"`
	}
	e := &apiError{Status: status}
	if json.Unmarshal(body, &wire) == nil {
		switch {
		case wire.Error != nil:
			e.Code, e.Message, e.Details = wire.Error.Code, wire.Error.Message, wire.Error.Details
		case wire.ErrorCode != "" || wire.ErrorDetails != "":
			e.Code, e.Message = wire.ErrorCode, wire.ErrorDetails
			if e.Message == "" {
				e.Message = "flag " + strconv.Quote(wire.Key)
			}
		}
	}
	if e.Message == "" {
		switch status {
		case http.StatusUnauthorized:
			e.Message = "unauthorized: the API key is missing, unknown or revoked (check --token or " + envToken + ")"
		case http.StatusForbidden:
			e.Message = "forbidden: this API key may not do that"
		case http.StatusTooManyRequests:
			e.Message = "rate limited: try again later"
		default:
			e.Message = strings.ToLower(http.StatusText(status))
			if e.Message == "" {
				e.Message = "unexpected response"
			}
		}
	}
	return e
}

// printRaw writes a JSON reply indented, for -o json.
func printRaw(w io.Writer, body []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(body), "", "  "); err != nil {
		return fmt.Errorf("the server sent invalid JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// newTable returns a tabwriter for human output; call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// envPath is the escaped API path of an environment (and optional sub-path parts).
func envPath(env string, parts ...string) string {
	p := "/api/v1/environments/" + url.PathEscape(env)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

// formatTime renders API timestamps compactly in UTC; the zero time is "-".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
