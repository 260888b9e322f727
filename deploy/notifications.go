package deploy

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// NotificationsAPI serves the delivery log and the webhook administration,
// for admin keys:
//
//	GET  /api/v1/webhooks                        the subscriptions (URLs shown as scheme://host only)
//	POST /api/v1/webhooks/test                   {"subscription": NAME} (optional): send a test event
//	GET  /api/v1/webhooks/dead?limit=N           dead-lettered deliveries, latest first
//	GET  /api/v1/notifications?limit=N&cursor=C  notifications with their deliveries, newest first
//	GET  /api/v1/notifications/{id}              one notification, its deliveries and every attempt
//	POST /api/v1/notifications/{id}/deliveries/{target}/redrive   retry a dead delivery now
type NotificationsAPI struct {
	sender *Sender
	outbox canary.Outbox
	now    func() time.Time
	log    *slog.Logger
}

// NewNotificationsAPI serves s's outbox. now nil means time.Now; logger nil
// discards.
func NewNotificationsAPI(s *Sender, now func() time.Time, logger *slog.Logger) *NotificationsAPI {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &NotificationsAPI{sender: s, outbox: s.outbox, now: now, log: logger}
}

// Routes returns the routes, all for admin keys.
func (a *NotificationsAPI) Routes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: "/api/v1/webhooks", Auth: AuthAdmin, Handler: http.HandlerFunc(a.subscriptions)},
		{Method: http.MethodPost, Path: "/api/v1/webhooks/test", Auth: AuthAdmin, Handler: http.HandlerFunc(a.test)},
		{Method: http.MethodGet, Path: "/api/v1/webhooks/dead", Auth: AuthAdmin, Handler: http.HandlerFunc(a.dead)},
		{Method: http.MethodGet, Path: "/api/v1/notifications", Auth: AuthAdmin, Handler: http.HandlerFunc(a.list)},
		{Method: http.MethodGet, Path: "/api/v1/notifications/{id}", Auth: AuthAdmin, Handler: http.HandlerFunc(a.get)},
		{Method: http.MethodPost, Path: "/api/v1/notifications/{id}/deliveries/{target}/redrive", Auth: AuthAdmin, Handler: http.HandlerFunc(a.redrive)},
	}
}

// subscriptionView is a subscription as the API shows it: no secret, and
// the URL cut to scheme and host (Slack's URLs are themselves secrets).
type subscriptionView struct {
	Name   string   `json:"name"`
	URL    string   `json:"url"`
	Format Format   `json:"format"`
	Events []string `json:"events"`
	Signed bool     `json:"signed"`
}

func (a *NotificationsAPI) subscriptions(w http.ResponseWriter, r *http.Request) {
	out := []subscriptionView{}
	for _, s := range a.sender.Subscriptions() {
		v := subscriptionView{Name: s.Name, Format: s.Format, Events: s.Events, Signed: s.Secret != ""}
		if v.Format == "" {
			v.Format = FormatGeneric
		}
		if v.Events == nil {
			v.Events = []string{"*"}
		}
		if u, err := url.Parse(s.URL); err == nil {
			v.URL = u.Scheme + "://" + u.Host
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
}

func (a *NotificationsAPI) test(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Subscription string `json:"subscription"`
	}
	if r.ContentLength != 0 {
		if e := decodeJSON(r, &req, true); e != nil {
			writeError(w, statusOf(e), e.Code, e.Message, e.Details...)
			return
		}
	}
	var targets []string
	for _, s := range a.sender.Subscriptions() {
		if req.Subscription == "" || s.Name == req.Subscription {
			targets = append(targets, s.Name)
		}
	}
	if len(targets) == 0 {
		if req.Subscription != "" {
			writeError(w, http.StatusNotFound, "not_found", "no webhook subscription is named "+strconv.Quote(req.Subscription), detail{Field: "subscription", Problem: "unknown"})
			return
		}
		writeError(w, http.StatusConflict, "conflict", "no webhook subscriptions are configured")
		return
	}
	n := canary.Notification{
		ID: canary.NewNotificationID(canary.EventTest), Event: canary.EventTest, Subject: "test",
		Payload: []byte(`{"message":"a test notification from Flagpole"}`), Time: a.now().UTC(),
	}
	if err := a.outbox.Enqueue(r.Context(), n, targets); err != nil {
		writeStoreError(w, a.log, err)
		return
	}
	a.sender.wakeUp()
	writeJSON(w, http.StatusAccepted, map[string]any{"notification": n.ID, "targets": targets})
}

func limitParam(r *http.Request) (int, *apiError) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, &apiError{Code: "invalid_request", Message: "limit: must be a whole number", Details: []detail{{Field: "limit", Problem: "must be a whole number"}}}
	}
	return n, nil
}

func (a *NotificationsAPI) dead(w http.ResponseWriter, r *http.Request) {
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, statusOf(e), e.Code, e.Message, e.Details...)
		return
	}
	ds, err := a.outbox.Dead(r.Context(), limit)
	if err != nil {
		writeStoreError(w, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": ds})
}

func (a *NotificationsAPI) list(w http.ResponseWriter, r *http.Request) {
	limit, e := limitParam(r)
	if e != nil {
		writeError(w, statusOf(e), e.Code, e.Message, e.Details...)
		return
	}
	page, err := a.outbox.Notifications(r.Context(), canary.NotificationQuery{Limit: limit, Cursor: r.URL.Query().Get("cursor")})
	if err != nil {
		writeStoreError(w, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *NotificationsAPI) get(w http.ResponseWriter, r *http.Request) {
	log, err := a.outbox.Notification(r.Context(), r.PathValue("id"))
	if err != nil {
		writeStoreError(w, a.log, err)
		return
	}
	writeJSON(w, http.StatusOK, log)
}

func (a *NotificationsAPI) redrive(w http.ResponseWriter, r *http.Request) {
	id := canary.DeliveryID(r.PathValue("id"), r.PathValue("target"))
	d, err := a.outbox.Redrive(r.Context(), id, a.now())
	if err != nil {
		if errors.Is(err, canary.ErrConflict) {
			writeError(w, http.StatusConflict, "conflict", "delivery "+id+" is not dead; only dead deliveries are redriven")
			return
		}
		writeStoreError(w, a.log, err)
		return
	}
	a.sender.wakeUp()
	writeJSON(w, http.StatusOK, d)
}
