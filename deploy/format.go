package deploy

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// GenericBody is the body of a generic webhook: the notification as
// enqueued, with its payload under "data".
type GenericBody struct {
	ID      string           `json:"id"`
	Event   canary.EventType `json:"event"`
	Subject string           `json:"subject"`
	Time    time.Time        `json:"time"`
	Data    json.RawMessage  `json:"data"`
}

// slackBody is a Slack incoming-webhook message.
type slackBody struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks"`
}

type slackBlock struct {
	Type     string      `json:"type"`
	Text     *slackText  `json:"text,omitempty"`
	Elements []slackText `json:"elements,omitempty"`
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// body renders n in format f.
func body(f Format, n canary.Notification) ([]byte, error) {
	if f == FormatSlack {
		return slackMessage(n)
	}
	data := n.Payload
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return json.Marshal(GenericBody{ID: n.ID, Event: n.Event, Subject: n.Subject, Time: n.Time.UTC(), Data: data})
}

// summaryFields are the payload members a human summary uses, whatever the
// event.
type summaryFields struct {
	Verdict   string   `json:"verdict"`
	Reason    string   `json:"reason"`
	Score     *float64 `json:"score"`
	Analysis  string   `json:"analysisId"`
	Message   string   `json:"message"`
	Phase     string   `json:"phase"`
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
}

// Summary is a one-line, human-readable account of a notification, as used
// in Slack messages and logs.
func Summary(n canary.Notification) string {
	var f summaryFields
	_ = json.Unmarshal(n.Payload, &f) // a payload of another shape just gives a shorter summary
	var b strings.Builder
	b.WriteString(string(n.Event))
	if n.Subject != "" {
		b.WriteString(" " + n.Subject)
	}
	if f.Verdict != "" {
		b.WriteString(": " + f.Verdict)
		if f.Score != nil && !math.IsNaN(*f.Score) && !math.IsInf(*f.Score, 0) {
			fmt.Fprintf(&b, " (score %.0f)", *f.Score)
		}
	} else if f.Phase != "" {
		b.WriteString(": " + f.Phase)
	}
	for _, s := range []string{f.Reason, f.Message} {
		if s != "" {
			b.WriteString(" — " + oneLine(s, 300))
			break
		}
	}
	return b.String()
}

func oneLine(s string, most int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > most {
		cut := most
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// slackEscape escapes the three characters Slack's mrkdwn treats as
// control characters.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func slackEmoji(n canary.Notification) string {
	var f summaryFields
	_ = json.Unmarshal(n.Payload, &f)
	switch {
	case n.Event == canary.EventRolloutFailed || f.Verdict == "fail":
		return ":rotating_light:"
	case n.Event == canary.EventRolloutSucceeded || f.Verdict == "pass":
		return ":white_check_mark:"
	case f.Verdict == "inconclusive":
		return ":grey_question:"
	}
	return ":information_source:"
}

func slackMessage(n canary.Notification) ([]byte, error) {
	text := slackEmoji(n) + " " + slackEscape(Summary(n))
	ctx := slackEscape(fmt.Sprintf("%s · %s · notification %s", n.Event, n.Time.UTC().Format(time.RFC3339), n.ID))
	return json.Marshal(slackBody{
		Text: text,
		Blocks: []slackBlock{
			{Type: "section", Text: &slackText{Type: "mrkdwn", Text: text}},
			{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: ctx}}},
		},
	})
}
