package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/flagpole/flagpole/canary"
)

// Format is a webhook body's shape.
type Format string

// The formats.
const (
	// FormatGeneric posts {"id","event","subject","time","data"} (see
	// GenericBody), signed with the subscription's secret.
	FormatGeneric Format = "generic"
	// FormatSlack posts a Slack incoming-webhook message: {"text", "blocks"}.
	FormatSlack Format = "slack"
)

// Subscription is one webhook receiver: where to post, how to sign, which
// events it wants, and in which shape.
type Subscription struct {
	// Name identifies the subscription in deliveries, logs and metrics:
	// lower-case letters, digits, '.', '_' and '-', at most 63.
	Name string `json:"name"`
	// URL is the http(s) address posted to. It may carry a token (Slack's
	// do), so it is never logged.
	URL string `json:"url"`
	// Secret keys the X-Flagpole-Signature HMAC. Required for the generic
	// format; optional for Slack (whose URL is itself the secret).
	Secret string `json:"-"`
	// Events filters what is sent: exact event types
	// ("analysis.completed"), a family ("rollout.*"), or "*". Empty means
	// every event.
	Events []string `json:"events,omitempty"`
	// Format is the body's shape; empty means FormatGeneric.
	Format Format `json:"format,omitempty"`
}

// Wants reports whether the subscription wants events of type e.
func (s Subscription) Wants(e canary.EventType) bool {
	if len(s.Events) == 0 {
		return true
	}
	for _, f := range s.Events {
		switch {
		case f == "*", f == string(e):
			return true
		case strings.HasSuffix(f, ".*") && strings.HasPrefix(string(e), strings.TrimSuffix(f, "*")):
			return true
		}
	}
	return false
}

var eventFilterRE = regexp.MustCompile(`^(\*|[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*(\.\*)?)$`)

// check appends the subscription's problems, with fields under prefix.
func (s Subscription) check(prefix string, p *[]canary.FieldError) {
	add := func(field, format string, args ...any) {
		*p = append(*p, canary.FieldError{Field: prefix + field, Message: fmt.Sprintf(format, args...)})
	}
	if err := canary.CheckTarget(prefix+"name", s.Name); err != nil {
		*p = append(*p, err.(*canary.ValidationError).Problems...)
	}
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		add("url", "required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		add("url", "must be an absolute http:// or https:// URL")
	case u.User != nil:
		add("url", "must not carry user:password; use the secret for authenticity")
	}
	switch s.Format {
	case "", FormatGeneric:
		if s.Secret == "" {
			add("secret", "required for the generic format (receivers verify X-Flagpole-Signature with it); set secret or secretEnv")
		}
	case FormatSlack:
	default:
		add("format", "%q is not generic or slack", s.Format)
	}
	if s.Secret != "" && len(s.Secret) < 16 {
		add("secret", "must be at least 16 characters")
	}
	for i, f := range s.Events {
		if !eventFilterRE.MatchString(f) {
			add("events["+strconv.Itoa(i)+"]", "%q is not an event type, a family such as rollout.*, or *", f)
		}
	}
}

// CheckSubscriptions checks every subscription and that names are unique.
// It returns a *canary.ValidationError naming each problem
// ("webhooks[1].url"), or nil.
func CheckSubscriptions(subs []Subscription) error {
	var p []canary.FieldError
	seen := map[string]bool{}
	for i, s := range subs {
		prefix := "webhooks[" + strconv.Itoa(i) + "]."
		s.check(prefix, &p)
		if seen[s.Name] {
			p = append(p, canary.FieldError{Field: prefix + "name", Message: fmt.Sprintf("%q is used by an earlier webhook", s.Name)})
		}
		seen[s.Name] = true
	}
	if len(p) > 0 {
		return &canary.ValidationError{Problems: p}
	}
	return nil
}

// subscriptionFile is the webhook configuration file.
type subscriptionFile struct {
	Webhooks []struct {
		Name      string   `json:"name"`
		URL       string   `json:"url"`
		Secret    string   `json:"secret"`
		SecretEnv string   `json:"secretEnv"`
		Events    []string `json:"events"`
		Format    Format   `json:"format"`
	} `json:"webhooks"`
}

// ParseSubscriptions reads a webhook configuration file (YAML or JSON):
//
//	webhooks:
//	  - name: ops                          # required, unique
//	    url: https://hooks.example.com/flagpole
//	    secretEnv: FLAGPOLE_WEBHOOK_OPS    # or secret: <at least 16 characters>
//	    events: [analysis.completed, rollout.*]   # default: every event
//	    format: generic                    # or slack
//
// secretEnv names an environment variable read through getenv, so the file
// itself holds no secret. It returns the subscriptions, or a
// *canary.ValidationError naming every problem (unknown fields too).
func ParseSubscriptions(data []byte, getenv func(string) string) ([]Subscription, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, &canary.ValidationError{Problems: []canary.FieldError{{Message: "not valid YAML or JSON: " + err.Error()}}}
	}
	var f subscriptionFile
	dec := json.NewDecoder(strings.NewReader(string(j)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, &canary.ValidationError{Problems: []canary.FieldError{{Message: "the webhook file does not have the expected shape: " + err.Error()}}}
	}
	subs := make([]Subscription, 0, len(f.Webhooks))
	var p []canary.FieldError
	for i, w := range f.Webhooks {
		s := Subscription{Name: w.Name, URL: w.URL, Secret: w.Secret, Events: w.Events, Format: w.Format}
		field := "webhooks[" + strconv.Itoa(i) + "]."
		switch {
		case w.Secret != "" && w.SecretEnv != "":
			p = append(p, canary.FieldError{Field: field + "secretEnv", Message: "give secret or secretEnv, not both"})
		case w.SecretEnv != "":
			if getenv == nil || getenv(w.SecretEnv) == "" {
				p = append(p, canary.FieldError{Field: field + "secretEnv", Message: fmt.Sprintf("environment variable %s is not set", w.SecretEnv)})
				s.Secret = strings.Repeat("x", 16) // reported above; keep the secret check quiet
			} else {
				s.Secret = getenv(w.SecretEnv)
			}
		}
		subs = append(subs, s)
	}
	if err := CheckSubscriptions(subs); err != nil {
		p = append(p, err.(*canary.ValidationError).Problems...)
	}
	if len(p) > 0 {
		return nil, &canary.ValidationError{Problems: p}
	}
	return subs, nil
}
