package deploy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/deploy"
)

// argoKayentaPhase is Argo's evaluateResult for the kayenta provider.
func argoKayentaPhase(score, pass, marginal int) string {
	switch {
	case score >= pass:
		return "Successful"
	case score >= marginal:
		return "Inconclusive"
	}
	return "Failed"
}

// TestKayentaContract replays the calls of Argo Rollouts' kayenta provider
// (config lookup, job start, polling the score) and judges the answers as
// it does, for each state of the analysis.
func TestKayentaContract(t *testing.T) {
	want := map[state]string{stPass: "Successful", stFail: "Failed", stInconclusive: "Inconclusive", stError: "Inconclusive", stCancelled: "Inconclusive"}
	for _, s := range []state{stPass, stFail, stInconclusive, stError, stCancelled} {
		t.Run(string(s), func(t *testing.T) {
			an := newFakeAnalyses(t)
			keys := keyStore{keys: map[string]auth.Key{auth.HashSecret("kayenta-key"): {ID: "k", Role: auth.RoleEditor, Envs: []string{"ci"}}}}
			k, err := deploy.NewKayenta(an, deploy.CheckKeys(keys), nil)
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			for _, r := range k.Routes() {
				mux.Handle(r.Method+" "+r.Path, r.Handler)
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()
			address := srv.URL + "/api/v1/kayenta/kayenta-key"

			get := func(url string) (int, map[string]any, []any) {
				resp, err := http.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				var obj map[string]any
				var arr []any
				if json.Unmarshal(b, &obj) != nil {
					_ = json.Unmarshal(b, &arr)
				}
				return resp.StatusCode, obj, arr
			}
			// 1. The config ID, looked up by name as Argo does.
			status, _, configs := get(fmt.Sprintf("%s/canaryConfig?application=%s&configurationAccountName=%s", address, "guestbook", "storage"))
			if status != 200 {
				t.Fatalf("canaryConfig: %d", status)
			}
			configID := ""
			for _, c := range configs {
				cm := c.(map[string]any)
				if cm["name"] == "http-canary" {
					configID = cm["id"].(string)
				}
			}
			if configID == "" {
				t.Fatalf("canaryConfig lists %v, without http-canary", configs)
			}
			// 2. Start the job with Argo's payload.
			scope := func(s string) string {
				b, _ := json.Marshal(map[string]any{"scope": s, "region": "", "step": 60, "start": "", "end": "", "extendedScopeParams": map[string]string{"service": "guestbook"}})
				return string(b)
			}
			payload := fmt.Sprintf(`{"scopes": {"default":{"controlScope": %s, "experimentScope": %s}}, "thresholds" : {"pass": %d, "marginal": %d}}`,
				scope(`rollouts_pod_template_hash="54d8b7c9f"`), scope(`rollouts_pod_template_hash="7c9d5f8b6"`), 90, 75)
			jobURL := fmt.Sprintf("%s/canary/%s?application=%s&metricsAccountName=%s&configurationAccountName=%s&storageAccountName=%s", address, configID, "guestbook", "prom", "cfg", "store")
			resp, err := http.Post(jobURL, "application/json", strings.NewReader(payload))
			if err != nil {
				t.Fatal(err)
			}
			var job map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&job)
			resp.Body.Close()
			execID, _ := job["canaryExecutionId"].(string)
			if resp.StatusCode != 200 || execID == "" {
				t.Fatalf("start: %d %v", resp.StatusCode, job)
			}
			runID := execID[:strings.LastIndex(execID, ".p")]
			sr, err := an.Run(t.Context(), runID)
			if err != nil || sr.Args.BaselineScope != `rollouts_pod_template_hash="54d8b7c9f"` || sr.Args.Values["service"] != "guestbook" {
				t.Fatalf("the run behind %s: %+v, %v", execID, sr.Args, err)
			}
			// 3. Poll: incomplete while running, then the score.
			status, ex, _ := get(address + "/canary/" + execID)
			if status != 200 || ex["complete"] != false {
				t.Fatalf("poll while running: %d %v", status, ex)
			}
			an.set(t, runID, s)
			status, ex, _ = get(address + "/canary/" + execID)
			if status != 200 || ex["complete"] != true {
				t.Fatalf("poll after the end: %d %v", status, ex)
			}
			score := ex["result"].(map[string]any)["judgeResult"].(map[string]any)["score"].(map[string]any)["score"].(float64)
			if got := argoKayentaPhase(int(score), 90, 75); got != want[s] {
				t.Errorf("Argo would judge score %v as %s, want %s (%v)", score, got, want[s], ex)
			}
			if fp := ex["flagpole"].(map[string]any); fp["analysisId"] != runID {
				t.Errorf("flagpole verdict = %v", fp)
			}
			// Refused calls.
			if status, _, _ := get(srv.URL + "/api/v1/kayenta/wrong-key/canaryConfig"); status != 401 {
				t.Errorf("a wrong key: %d", status)
			}
			if status, _, _ := get(address + "/canary/not-an-execution"); status != 404 {
				t.Errorf("an unknown execution: %d", status)
			}
			resp, _ = http.Post(address+"/canary/nope", "application/json", strings.NewReader(payload))
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("an unknown config: %d", resp.StatusCode)
			}
			resp, _ = http.Post(address+"/canary/http-canary", "application/json", strings.NewReader(`{"scopes":{}}`))
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("no scopes: %d", resp.StatusCode)
			}
		})
	}
}
