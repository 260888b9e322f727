package main

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// noopBenchPath is the route of the load-test comparison handler.
const noopBenchPath = "/_bench/noop"

// noopBody is about the size of a single-flag OFREP answer.
var noopBody = []byte(`{"key":"noop","value":true,"variant":"on","reason":"STATIC","metadata":{}}`)

// withNoopBench serves POST /_bench/noop from a bare echo router with one
// handler that reads nothing and answers a constant OFREP-sized body, and
// everything else from next. Load tests compare OFREP against it in the same
// process and run: it is the ceiling set by net/http and echo alone.
func withNoopBench(next http.Handler) http.Handler {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.POST(noopBenchPath, func(c echo.Context) error {
		return c.JSONBlob(http.StatusOK, noopBody)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == noopBenchPath {
			e.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}
