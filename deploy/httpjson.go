package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/flagpole/flagpole/canary"
)

// Route is one HTTP endpoint deploy serves. The server that mounts it (the
// api package, wired by cmd/flagpole) authenticates the caller first as Auth
// says, then calls Handler with path parameters readable through
// Request.PathValue.
type Route struct {
	Method string
	// Path is the route pattern with {name} parameters, such as
	// "/api/v1/notifications/{id}".
	Path string
	// Auth is who may call: AuthAdmin, AuthEditor or AuthNone.
	Auth    string
	Handler http.Handler
}

// Who may call a Route.
const (
	// AuthAdmin: an admin API key.
	AuthAdmin = "admin"
	// AuthEditor: an admin key or an editor key of any environment.
	AuthEditor = "editor"
	// AuthNone: no key checked by the server; the handler authenticates
	// itself if it must (Flagger cannot send headers, so its hooks read
	// the key from the payload's metadata).
	AuthNone = "none"
)

// maxBody bounds the request bodies deploy reads.
const maxBody = 64 << 10

// errorBody is the API's error shape:
// {"error":{"code","message","details":[{"field","problem"}]}}.
type errorBody struct {
	Error apiError `json:"error"`
}

type apiError struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []detail `json:"details,omitempty"`
}

type detail struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"the answer could not be encoded"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string, details ...detail) {
	writeJSON(w, status, errorBody{Error: apiError{Code: code, Message: msg, Details: details}})
}

// validationDetails turns a *canary.ValidationError into details.
func validationDetails(err error) ([]detail, bool) {
	var ve *canary.ValidationError
	if !errors.As(err, &ve) {
		return nil, false
	}
	out := make([]detail, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		out = append(out, detail{Field: p.Field, Problem: p.Message})
	}
	return out, true
}

// writeStoreError maps an error from the analysis store or the outbox,
// once, onto the API's error shape; anything unknown is a 500 whose cause
// is logged, never shown.
func writeStoreError(w http.ResponseWriter, log *slog.Logger, err error) {
	if d, ok := validationDetails(err); ok {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error(), d...)
		return
	}
	switch {
	case errors.Is(err, canary.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, canary.ErrConflict), errors.Is(err, canary.ErrRunEnded):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, canary.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the store is unavailable; nothing was changed; retry later")
	default:
		log.Error("deploy request failed", "error", err)
		writeError(w, http.StatusInternalServerError, "internal", "internal error; see the server log")
	}
}

// decodeJSON reads a JSON body of at most maxBody bytes into v, refusing
// unknown fields when strict. The error names the problem (and the field,
// when encoding/json says which).
func decodeJSON(r *http.Request, v any, strict bool) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && mt != "text/plain") {
			return &apiError{Code: "unsupported_media_type", Message: "the body must be JSON (Content-Type: application/json)"}
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return &apiError{Code: "invalid_request", Message: "the body could not be read"}
	}
	if len(body) > maxBody {
		return &apiError{Code: "too_large", Message: fmt.Sprintf("the body is larger than %d bytes", maxBody)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &apiError{Code: "invalid_request", Message: te.Field + ": must be " + te.Type.String(), Details: []detail{{Field: te.Field, Problem: "must be " + te.Type.String()}}}
		}
		return &apiError{Code: "invalid_request", Message: "the body is not valid JSON of the expected shape: " + err.Error()}
	}
	if dec.More() {
		return &apiError{Code: "invalid_request", Message: "the body holds more than one JSON value"}
	}
	return nil
}

func statusOf(e *apiError) int {
	switch e.Code {
	case "unsupported_media_type":
		return http.StatusUnsupportedMediaType
	case "too_large":
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}
