package deploy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/outboxtest"
	"github.com/flagpole/flagpole/deploy"
)

func TestNotificationsAPI(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setDown(true, http.StatusGone) // every first attempt is dead-lettered
	recv := httptest.NewServer(rcv)
	defer recv.Close()
	ob := outboxtest.NewMemory()
	s := newSender(t, deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{
		sub("ops", recv.URL+"/hooks?token=SECRET"),
		{Name: "chat", URL: "https://hooks.slack.com/services/T0/B0/XYZ", Format: deploy.FormatSlack, Events: []string{"rollout.*"}},
	}})
	api := deploy.NewNotificationsAPI(s, nil, nil)
	mux := http.NewServeMux()
	for _, r := range api.Routes() {
		if r.Auth != deploy.AuthAdmin {
			t.Errorf("%s %s is %s, want admin", r.Method, r.Path, r.Auth)
		}
		mux.Handle(r.Method+" "+r.Path, r.Handler)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	status, body := do("GET", "/api/v1/webhooks", "")
	if status != 200 || strings.Contains(body, "SECRET") || strings.Contains(body, "XYZ") || strings.Contains(body, testSecret) {
		t.Errorf("GET webhooks %d leaks a secret: %s", status, body)
	}
	if !strings.Contains(body, `"url":"https://hooks.slack.com"`) || !strings.Contains(body, `"signed":true`) {
		t.Errorf("GET webhooks = %s", body)
	}

	if _, _, err := s.Notify(t.Context(), notification("n1", canary.EventAnalysisCompleted)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	status, body = do("GET", "/api/v1/webhooks/dead", "")
	if status != 200 || !strings.Contains(body, `"id":"n1/ops"`) || !strings.Contains(body, `"state":"dead"`) {
		t.Errorf("GET dead = %d %s", status, body)
	}
	status, body = do("GET", "/api/v1/notifications/n1", "")
	var log canary.NotificationLog
	if status != 200 || json.Unmarshal([]byte(body), &log) != nil || len(log.Attempts) != 1 || log.Attempts[0].Status != 410 {
		t.Errorf("GET notification = %d %s", status, body)
	}
	// Redrive after the receiver is fixed: delivered.
	rcv.setDown(false, 0)
	status, body = do("POST", "/api/v1/notifications/n1/deliveries/ops/redrive", "")
	if status != 200 || !strings.Contains(body, `"state":"pending"`) {
		t.Fatalf("redrive = %d %s", status, body)
	}
	if n, _ := s.RunOnce(t.Context()); n != 1 || rcv.delivered()["n1/ops"] != 1 {
		t.Errorf("after the redrive: %d attempts, delivered %v", n, rcv.delivered())
	}
	if status, body = do("POST", "/api/v1/notifications/n1/deliveries/ops/redrive", ""); status != 409 {
		t.Errorf("redrive of a delivered delivery = %d %s", status, body)
	}
	if status, _ = do("POST", "/api/v1/notifications/n1/deliveries/nobody/redrive", ""); status != 404 {
		t.Errorf("redrive of an unknown delivery = %d", status)
	}
	status, body = do("POST", "/api/v1/webhooks/test", `{"subscription":"ops"}`)
	if status != 202 || !strings.Contains(body, `"targets":["ops"]`) {
		t.Fatalf("test = %d %s", status, body)
	}
	if n, _ := s.RunOnce(t.Context()); n != 1 {
		t.Errorf("the test notification made %d attempts", n)
	}
	status, body = do("GET", "/api/v1/notifications?limit=1", "")
	var page canary.NotificationPage
	if status != 200 || json.Unmarshal([]byte(body), &page) != nil || len(page.Notifications) != 1 || page.Next == "" {
		t.Fatalf("list = %d %s", status, body)
	}
	if status, body = do("GET", "/api/v1/notifications?cursor="+page.Next, ""); status != 200 || !strings.Contains(body, `"id":"n1"`) {
		t.Errorf("second page = %d %s", status, body)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		field              string
	}{
		{"GET", "/api/v1/notifications?limit=ten", "", 400, "limit"},
		{"GET", "/api/v1/notifications?limit=100000", "", 400, "limit"},
		{"GET", "/api/v1/notifications?cursor=zzz", "", 400, "cursor"},
		{"GET", "/api/v1/notifications/missing", "", 404, ""},
		{"GET", "/api/v1/webhooks/dead?limit=-1", "", 400, "limit"},
		{"POST", "/api/v1/webhooks/test", `{"subscription":"nobody"}`, 404, "subscription"},
		{"POST", "/api/v1/webhooks/test", `{"subscriber":"ops"}`, 400, ""},
	} {
		status, body := do(tc.method, tc.path, tc.body)
		if status != tc.status || !strings.Contains(body, `"error"`) || !strings.Contains(body, tc.field) {
			t.Errorf("%s %s = %d %s; want %d naming %q", tc.method, tc.path, status, body, tc.status, tc.field)
		}
	}
	ob.Fail(true)
	if status, body := do("GET", "/api/v1/notifications", ""); status != 503 {
		t.Errorf("list with the outbox down = %d %s", status, body)
	}
}
