package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// OFREP endpoints. They never touch the store on the hot path: the flag set
// comes from memory and the key from the key cache. Their error bodies
// follow OFREP: {key, errorCode, errorDetails} for a flag, {errorCode,
// errorDetails} for a bulk request, {errorDetails} for 5xx and 429, and no
// body for 401 and 403. Every response is application/json.

// evaluateFlag serves POST /ofrep/v1/evaluate/flags/{key}.
func (s *Server) evaluateFlag(c echo.Context) error {
	rc := c.(*reqCtx)
	st, ok := s.ofrepPrelude(rc)
	if !ok {
		return nil
	}
	key, err := pathParam(rc, "key")
	if err != nil {
		s.ofrepFailure(rc, http.StatusBadRequest, rc.Param("key"), ofrep.General, "the flag key in the path is not a valid URL path segment")
		return nil
	}
	buf := s.getBuf()
	defer s.putBuf(buf)
	body, ok := s.ofrepBody(rc, buf)
	if !ok {
		return nil
	}
	start := time.Now()
	evalCtx, perr := parseEvalRequest(body)
	if perr != nil {
		s.ofrepFailure(rc, http.StatusBadRequest, key, ofrep.ErrorCode(perr.code), perr.message)
		return nil
	}
	if st == nil {
		s.ofrepFailure(rc, http.StatusNotFound, key, ofrep.FlagNotFound, fmt.Sprintf("environment %q does not exist", rc.env))
		return nil
	}
	fe := st.flags[key]
	if fe == nil {
		s.ofrepFailure(rc, http.StatusNotFound, key, ofrep.FlagNotFound, fmt.Sprintf("flag %q is not defined in environment %q", key, st.name))
		return nil
	}
	var res flags.Resolution
	var out []byte
	var slot *counterSlot
	if fe.static {
		res, out, slot = fe.staticRes, fe.staticBody, fe.staticN
	} else {
		res = st.set.Evaluate(key, evalCtx)
		out, slot = fe.lookup(res)
	}
	s.exposureScope(st, evalCtx).flag(fe, res)
	status := http.StatusOK
	if res.Reason == flags.ReasonError || res.ErrorCode != "" {
		status = http.StatusBadRequest
		if res.ErrorCode == flags.ErrorFlagNotFound {
			status = http.StatusNotFound
		}
	}
	if out == nil {
		*buf = fe.appendResolution((*buf)[:0], res)
		out = *buf
	}
	if slot != nil {
		slot.inc(s.m.evaluations)
	}
	s.m.evalSingle.Observe(time.Since(start).Seconds())
	s.ofrepWrite(rc, status, out)
	return nil
}

// evaluateFlags serves POST /ofrep/v1/evaluate/flags: every flag of the
// environment, sorted by key, with a strong ETag of the result.
func (s *Server) evaluateFlags(c echo.Context) error {
	rc := c.(*reqCtx)
	st, ok := s.ofrepPrelude(rc)
	if !ok {
		return nil
	}
	buf := s.getBuf()
	defer s.putBuf(buf)
	body, ok := s.ofrepBody(rc, buf)
	if !ok {
		return nil
	}
	start := time.Now()
	evalCtx, perr := parseEvalRequest(body)
	if perr != nil {
		s.ofrepBulkFailure(rc, http.StatusBadRequest, ofrep.ErrorCode(perr.code), perr.message)
		return nil
	}
	if st == nil {
		s.ofrepBulkFailure(rc, http.StatusBadRequest, ofrep.General, fmt.Sprintf("environment %q does not exist", rc.env))
		return nil
	}
	xs := s.exposureScope(st, evalCtx)
	out := append((*buf)[:0], `{"flags":[`...)
	for i, fe := range st.ordered {
		if i > 0 {
			out = append(out, ',')
		}
		var b []byte
		var slot *counterSlot
		var res flags.Resolution
		if fe.static {
			res, b, slot = fe.staticRes, fe.staticBody, fe.staticN
		} else {
			res = st.set.Evaluate(fe.key, evalCtx)
			b, slot = fe.lookup(res)
		}
		xs.bulk(i, fe, res)
		if b == nil {
			out = fe.appendResolution(out, res)
		} else {
			out = append(out, b...)
		}
		if slot != nil {
			slot.inc(s.m.evaluations)
		}
	}
	out = append(out, st.bulkTail...)
	*buf = out
	etag := bulkETag(st.hash, out)
	s.m.evalBulk.Observe(time.Since(start).Seconds())
	h := rc.Response().Header()
	h["Etag"] = []string{etag}
	if inm := rc.Request().Header.Get("If-None-Match"); inm != "" && ofrep.MatchesETag(inm, etag) {
		h["Content-Type"] = hvJSON
		rc.Response().WriteHeader(http.StatusNotModified)
		return nil
	}
	s.ofrepWrite(rc, http.StatusOK, out)
	return nil
}

// bulkETag is a strong entity tag of a bulk result: a hash of the flag set's
// hash and the body, so it changes whenever the result does (including
// through time-based targeting) and is the same on every replica.
func bulkETag(setHash string, body []byte) string {
	d := xxhash.New()
	_, _ = d.WriteString(setHash)
	_, _ = d.Write([]byte{0})
	_, _ = d.Write(body)
	var b [18]byte
	b[0] = '"'
	const digits = "0123456789abcdef"
	sum := d.Sum64()
	for i := 16; i >= 1; i-- {
		b[i] = digits[sum&0xF]
		sum >>= 4
	}
	b[17] = '"'
	return string(b[:])
}

// ofrepPrelude authenticates the caller, picks the environment, applies the
// rate limit and checks readiness. When it returns false the response has
// been written. A nil state with true means the environment does not exist.
func (s *Server) ofrepPrelude(rc *reqCtx) (*envState, bool) {
	k, err := s.authenticate(rc)
	if err != nil {
		if errors.Is(err, flags.ErrUnavailable) {
			s.ofrepGeneralError(rc, http.StatusServiceUnavailable, "the key store is unavailable, so the API key cannot be checked; retry later")
			return nil, false
		}
		rc.Response().Header().Set("WWW-Authenticate", `Bearer realm="flagpole"`)
		s.ofrepNoBody(rc, http.StatusUnauthorized)
		return nil, false
	}
	env, ok := s.ofrepEnv(rc, k)
	if !ok {
		s.ofrepNoBody(rc, http.StatusForbidden)
		return nil, false
	}
	rc.env = env
	if s.limiter != nil {
		if ok, wait := s.limiter.allow(k.ID, s.now()); !ok {
			s.m.rateLimited.Inc()
			secs := int64((wait + time.Second - 1) / time.Second)
			rc.Response().Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
			s.ofrepGeneralError(rc, http.StatusTooManyRequests, "rate limit exceeded for this API key; retry after the time in Retry-After")
			return nil, false
		}
	}
	if !s.ready.Load() {
		rc.Response().Header().Set("Retry-After", "1")
		s.ofrepGeneralError(rc, http.StatusServiceUnavailable, "flag sets are still loading; retry shortly")
		return nil, false
	}
	return s.env(env), true
}

// ofrepEnv picks the environment: an sdk key's own (naming another is
// forbidden), otherwise ?env= or X-Flagpole-Environment or "default", which
// the key must be allowed to evaluate.
func (s *Server) ofrepEnv(rc *reqCtx, k auth.Key) (string, bool) {
	req := rc.Request()
	requested := ""
	if req.URL.RawQuery != "" {
		requested = rc.QueryParam(ofrep.QueryEnvironment)
	}
	if requested == "" {
		requested = req.Header.Get(ofrep.HeaderEnvironment)
	}
	if k.Role == auth.RoleSDK {
		if len(k.Envs) != 1 || (requested != "" && requested != k.Envs[0]) {
			return "", false
		}
		return k.Envs[0], k.CanEvaluate(k.Envs[0])
	}
	if requested == "" {
		requested = ofrep.DefaultEnvironment
	}
	return requested, k.CanEvaluate(requested)
}

// ofrepBody reads the request body into buf. A body over the limit is
// answered with 413.
func (s *Server) ofrepBody(rc *reqCtx, buf *[]byte) ([]byte, bool) {
	r := rc.Request()
	if r.ContentLength > s.bodyLimit {
		s.ofrepGeneralError(rc, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", s.bodyLimit))
		return nil, false
	}
	if r.Body == nil || r.ContentLength == 0 {
		return nil, true
	}
	b := (*buf)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > s.bodyLimit {
			*buf = b
			s.ofrepGeneralError(rc, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than the limit of %d bytes", s.bodyLimit))
			return nil, false
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			*buf = b
			s.ofrepFailure(rc, http.StatusBadRequest, "", ofrep.ParseError, "the request body could not be read: "+err.Error())
			return nil, false
		}
	}
	*buf = b
	// The response is later encoded into the same buffer: the context
	// parser copies what it keeps, so that is safe.
	return b, true
}

func (s *Server) ofrepWrite(rc *reqCtx, status int, body []byte) {
	rc.Response().Header()["Content-Type"] = hvJSON
	rc.Response().WriteHeader(status)
	_, _ = rc.Response().Write(body)
}

func (s *Server) ofrepNoBody(rc *reqCtx, status int) {
	rc.Response().Header()["Content-Type"] = hvJSON
	rc.Response().WriteHeader(status)
}

// ofrepFailure writes {key, errorCode, errorDetails}.
func (s *Server) ofrepFailure(rc *reqCtx, status int, key string, code ofrep.ErrorCode, details string) {
	b := appendString([]byte(`{"key":`), key)
	b = append(b, `,"errorCode":`...)
	b = appendString(b, string(code))
	b = append(b, `,"errorDetails":`...)
	b = appendString(b, details)
	s.ofrepWrite(rc, status, append(b, '}'))
}

// ofrepBulkFailure writes {errorCode, errorDetails}.
func (s *Server) ofrepBulkFailure(rc *reqCtx, status int, code ofrep.ErrorCode, details string) {
	b := appendString([]byte(`{"errorCode":`), string(code))
	b = append(b, `,"errorDetails":`...)
	b = appendString(b, details)
	s.ofrepWrite(rc, status, append(b, '}'))
}

// ofrepGeneralError writes {errorDetails}.
func (s *Server) ofrepGeneralError(rc *reqCtx, status int, details string) {
	b := appendString([]byte(`{"errorDetails":`), details)
	s.ofrepWrite(rc, status, append(b, '}'))
}
