package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// Error codes of the admin API's error shape.
const (
	codeInvalidRequest     = "invalid_request"
	codeUnauthorized       = "unauthorized"
	codeForbidden          = "forbidden"
	codeNotFound           = "not_found"
	codeConflict           = "conflict"
	codePreconditionFailed = "precondition_failed"
	codeTooLarge           = "too_large"
	codeUnsupportedMedia   = "unsupported_media_type"
	codeInvalidFlags       = "invalid_flags"
	codeRateLimited        = "rate_limited"
	codeUnavailable        = "unavailable"
	codeInternal           = "internal"
	codeMethodNotAllowed   = "method_not_allowed"
	codeNotAcceptable      = "not_acceptable"
)

// Detail names one problem with a request: the field (a JSON path, a header,
// a query parameter) and what is wrong with it.
type Detail struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

// apiError is an admin API failure: the HTTP status and the body's error.
// Handlers return it; the error handler writes it.
type apiError struct {
	Status  int      `json:"-"`
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []Detail `json:"details,omitempty"`
	cause   error
}

func (e *apiError) Error() string { return e.Message }
func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, msg string, details ...Detail) *apiError {
	return &apiError{Status: status, Code: code, Message: msg, Details: details}
}

func badRequest(field, problem string) *apiError {
	return newError(http.StatusBadRequest, codeInvalidRequest, field+": "+problem, Detail{Field: field, Problem: problem})
}

// msgUnavailable is what a write says when the store is down.
const msgUnavailable = "the flag store is unavailable, so nothing was changed; flag evaluation keeps serving the last known flags; retry later"

// mapError turns an error from flags, auth or the store into the API error
// shape. Errors it does not know become 500, with the cause logged by the
// error handler and never shown to the client.
func mapError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ie *flags.InputError
	if errors.As(err, &ie) {
		return badRequest(ie.Field, ie.Problem)
	}
	var ve *flags.ValidationError
	if errors.As(err, &ve) {
		details := make([]Detail, len(ve.Problems))
		for i, p := range ve.Problems {
			details[i] = Detail{Field: p.Path, Problem: p.Message}
		}
		msg := fmt.Sprintf("the flag set is invalid (%d problems); nothing was changed", len(details))
		if len(details) == 1 {
			msg = "the flag set is invalid: " + details[0].Field + ": " + details[0].Problem + "; nothing was changed"
		}
		return &apiError{Status: http.StatusUnprocessableEntity, Code: codeInvalidFlags, Message: msg, Details: details, cause: err}
	}
	switch {
	case errors.Is(err, flags.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: msgUnavailable, cause: err}
	case errors.Is(err, flags.ErrNotFound), errors.Is(err, auth.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: err.Error(), cause: err}
	case errors.Is(err, flags.ErrExists), errors.Is(err, auth.ErrExists):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: err.Error(), cause: err}
	case errors.Is(err, flags.ErrConflict):
		return &apiError{Status: http.StatusPreconditionFailed, Code: codePreconditionFailed,
			Message: err.Error() + "; re-read the resource and retry with its current ETag", cause: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the request timed out; nothing may have been changed, re-read before retrying", cause: err}
	case errors.Is(err, context.Canceled):
		// The client went away; the status is for the logs only.
		return &apiError{Status: 499, Code: codeInvalidRequest, Message: "request cancelled", cause: err}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error; see the server log for request details", cause: err}
}

// errorBody is the JSON shape of every admin API error.
type errorBody struct {
	Error *apiError `json:"error"`
}

// handleError is echo's error handler: it writes every error in the one
// shape, OFREP's errors excepted (those handlers write their own bodies).
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		ae = fromEchoError(he)
	default:
		ae = mapError(err)
	}
	if ae.Status >= 500 && ae.Status != http.StatusServiceUnavailable {
		s.log.ErrorContext(c.Request().Context(), "request failed", "request_id", requestID(c), "route", c.Path(), "error", err)
	}
	if ae.Status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	status := ae.Status
	if status == 499 {
		c.Response().WriteHeader(status)
		return
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	b, _ := json.Marshal(errorBody{Error: ae})
	_ = c.Blob(status, echo.MIMEApplicationJSON, b)
}

func fromEchoError(he *echo.HTTPError) *apiError {
	msg := http.StatusText(he.Code)
	if m, ok := he.Message.(string); ok && m != "" {
		msg = m
	}
	switch he.Code {
	case http.StatusNotFound:
		return newError(he.Code, codeNotFound, "no such route: "+strings.ToLower(msg))
	case http.StatusMethodNotAllowed:
		return newError(he.Code, codeMethodNotAllowed, "method not allowed on this route")
	case http.StatusRequestEntityTooLarge:
		return newError(he.Code, codeTooLarge, "request body too large")
	case http.StatusUnsupportedMediaType:
		return newError(he.Code, codeUnsupportedMedia, msg)
	case http.StatusUnauthorized:
		return newError(he.Code, codeUnauthorized, msg)
	case http.StatusForbidden:
		return newError(he.Code, codeForbidden, msg)
	}
	if he.Code >= 400 && he.Code < 500 {
		return newError(he.Code, codeInvalidRequest, msg)
	}
	return &apiError{Status: http.StatusInternalServerError, Code: codeInternal, Message: "internal error", cause: he}
}

// readBody reads the request body up to limit bytes. A larger body is a 413.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	if r.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, badRequest("body", "could not be read: "+err.Error())
	}
	if int64(len(data)) > limit {
		return nil, tooLarge(limit)
	}
	return data, nil
}

func tooLarge(limit int64) *apiError {
	return newError(http.StatusRequestEntityTooLarge, codeTooLarge,
		fmt.Sprintf("request body is larger than the limit of %d bytes", limit),
		Detail{Field: "body", Problem: fmt.Sprintf("larger than %d bytes", limit)})
}

// mediaType returns the request's media type, lower-cased, without parameters.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "invalid"
	}
	return mt
}

func isJSONType(mt string) bool {
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

func isYAMLType(mt string) bool {
	switch mt {
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return true
	}
	return false
}

func unsupportedType(r *http.Request, want string) *apiError {
	got := r.Header.Get("Content-Type")
	if got == "" {
		got = "none"
	}
	return newError(http.StatusUnsupportedMediaType, codeUnsupportedMedia,
		fmt.Sprintf("Content-Type %s is not supported here; send %s", got, want),
		Detail{Field: "Content-Type", Problem: "must be " + want})
}

// decodeJSONBody reads a JSON request body strictly into v: the content type
// must be JSON, unknown fields are rejected, and exactly one value may be sent.
// Every failure is a 4xx naming the field or position.
func (s *Server) decodeJSONBody(c echo.Context, v any) error {
	r := c.Request()
	if mt := mediaType(r); !isJSONType(mt) {
		return unsupportedType(r, "application/json")
	}
	data, err := readBody(r, s.bodyLimit)
	if err != nil {
		return err
	}
	return decodeJSON(data, v)
}

// decodeJSON decodes data strictly into v (see decodeJSONBody).
func decodeJSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return badRequest("body", "a JSON object is required")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		off := dec.InputOffset()
		return badRequest("body", fmt.Sprintf("unexpected data after the JSON value at %s", position(data, off)))
	}
	return nil
}

// jsonError turns an encoding/json error into a 400 naming the field or the
// position of the problem.
func jsonError(data []byte, err error) *apiError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return badRequest("body", fmt.Sprintf("malformed JSON at %s: %s", position(data, se.Offset), strings.TrimPrefix(se.Error(), "json: ")))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("body", fmt.Sprintf("malformed JSON: unexpected end of input at %s", position(data, int64(len(data)))))
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return badRequest(field, fmt.Sprintf("must be %s, not %s", jsonTypeName(te.Type.String()), te.Value))
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name, _ = strconv.Unquote(name)
		return badRequest(name, "unknown field")
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return badRequest("body", strings.TrimPrefix(msg, "json: "))
}

// jsonTypeName names a Go type the way a JSON client thinks of it.
func jsonTypeName(goType string) string {
	switch {
	case goType == "string", strings.HasSuffix(goType, "State"), strings.HasSuffix(goType, "Role"):
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"), goType == "json.Number":
		return "a number"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "struct"), strings.HasPrefix(goType, "api."), strings.HasPrefix(goType, "flags."):
		return "an object"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case goType == "*string":
		return "a string or null"
	}
	return goType
}

// position describes a byte offset as line and column (1-based).
func position(data []byte, off int64) string {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	if off < 0 {
		off = 0
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Sprintf("line %d, column %d (byte %d)", line, col, off)
}
