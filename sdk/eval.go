package sdk

import (
	"context"
	"encoding/json"
	"math"
	"slices"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/flags"
)

// flagState is one compiled flag set as the provider serves it.
type flagState struct {
	set     *flags.Set
	env     string
	version int64 // 0 for a bootstrap file
	etag    string
}

func newFlagState(set *flags.Set, env string, version int64, etag string) *flagState {
	return &flagState{set: set, env: env, version: version, etag: etag}
}

// primitive reports whether v is a value flag metadata may hold: a
// boolean, a string or a finite number. (The engine accepts only those in
// flag sets; OFREP answers are checked with it.)
func primitive(v any) bool {
	switch t := v.(type) {
	case bool, string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32:
		return true
	case float64:
		return !math.IsNaN(t) && !math.IsInf(t, 0)
	}
	return false
}

// detail converts an engine resolution to OpenFeature's. The metadata map
// is the engine's shared one: the SDK copies it before handing it out.
func (s *flagState) detail(r *flags.Resolution) openfeature.ProviderResolutionDetail {
	d := openfeature.ProviderResolutionDetail{Reason: openfeature.Reason(r.Reason), Variant: r.Variant,
		FlagMetadata: openfeature.FlagMetadata(r.Metadata)}
	if r.ErrorCode != flags.ErrorNone {
		d.ResolutionError = resolutionError(openfeature.ErrorCode(r.ErrorCode), r.ErrorMessage)
		d.Reason = openfeature.ErrorReason
	}
	return d
}

// resolutionError builds OpenFeature's error for code; an unknown code is
// GENERAL.
func resolutionError(code openfeature.ErrorCode, msg string) openfeature.ResolutionError {
	switch code {
	case openfeature.FlagNotFoundCode:
		return openfeature.NewFlagNotFoundResolutionError(msg)
	case openfeature.ParseErrorCode:
		return openfeature.NewParseErrorResolutionError(msg)
	case openfeature.TypeMismatchCode:
		return openfeature.NewTypeMismatchResolutionError(msg)
	case openfeature.TargetingKeyMissingCode:
		return openfeature.NewTargetingKeyMissingResolutionError(msg)
	case openfeature.InvalidContextCode:
		return openfeature.NewInvalidContextResolutionError(msg)
	case openfeature.ProviderNotReadyCode:
		return openfeature.NewProviderNotReadyResolutionError(msg)
	case openfeature.ProviderFatalCode:
		return openfeature.NewProviderFatalResolutionError(msg)
	}
	return openfeature.NewGeneralResolutionError(msg)
}

var notReady = openfeature.ProviderResolutionDetail{
	ResolutionError: openfeature.NewProviderNotReadyResolutionError("flagpole: no flag set yet"),
	Reason:          openfeature.ErrorReason,
}

// BooleanEvaluation resolves a boolean flag. Failures return defaultValue
// with reason ERROR and the OpenFeature error code; a disabled flag or a
// code default returns defaultValue with reason DISABLED or DEFAULT.
func (p *Provider) BooleanEvaluation(ctx context.Context, flag string, defaultValue bool, flatCtx openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	if p.remote != nil {
		return remoteTyped(ctx, p.remote, flag, defaultValue, flatCtx, flags.TypeBoolean, asBool)
	}
	s := p.current.Load()
	if s == nil {
		return openfeature.BoolResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady}
	}
	v, r := s.set.Boolean(flag, defaultValue, flatCtx)
	return openfeature.BoolResolutionDetail{Value: v, ProviderResolutionDetail: s.detail(&r)}
}

// StringEvaluation resolves a string flag (see BooleanEvaluation).
func (p *Provider) StringEvaluation(ctx context.Context, flag string, defaultValue string, flatCtx openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	if p.remote != nil {
		return remoteTyped(ctx, p.remote, flag, defaultValue, flatCtx, flags.TypeString, asString)
	}
	s := p.current.Load()
	if s == nil {
		return openfeature.StringResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady}
	}
	v, r := s.set.String(flag, defaultValue, flatCtx)
	return openfeature.StringResolutionDetail{Value: v, ProviderResolutionDetail: s.detail(&r)}
}

// FloatEvaluation resolves a number flag (see BooleanEvaluation).
func (p *Provider) FloatEvaluation(ctx context.Context, flag string, defaultValue float64, flatCtx openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	if p.remote != nil {
		return remoteTyped(ctx, p.remote, flag, defaultValue, flatCtx, flags.TypeNumber, asFloat)
	}
	s := p.current.Load()
	if s == nil {
		return openfeature.FloatResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady}
	}
	v, r := s.set.Float(flag, defaultValue, flatCtx)
	return openfeature.FloatResolutionDetail{Value: v, ProviderResolutionDetail: s.detail(&r)}
}

// IntEvaluation resolves a number flag whose value is a whole number; a
// fractional value is TYPE_MISMATCH (see BooleanEvaluation).
func (p *Provider) IntEvaluation(ctx context.Context, flag string, defaultValue int64, flatCtx openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	if p.remote != nil {
		return remoteTyped(ctx, p.remote, flag, defaultValue, flatCtx, flags.TypeNumber, asInt)
	}
	s := p.current.Load()
	if s == nil {
		return openfeature.IntResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady}
	}
	v, r := s.set.Int(flag, defaultValue, flatCtx)
	return openfeature.IntResolutionDetail{Value: v, ProviderResolutionDetail: s.detail(&r)}
}

// ObjectEvaluation resolves an object flag (see BooleanEvaluation). The
// returned map is shared: do not modify it.
func (p *Provider) ObjectEvaluation(ctx context.Context, flag string, defaultValue any, flatCtx openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	if p.remote != nil {
		return remoteTyped(ctx, p.remote, flag, defaultValue, flatCtx, flags.TypeObject, asObject)
	}
	s := p.current.Load()
	if s == nil {
		return openfeature.InterfaceResolutionDetail{Value: defaultValue, ProviderResolutionDetail: notReady}
	}
	v, r := s.set.Object(flag, defaultValue, flatCtx)
	return openfeature.InterfaceResolutionDetail{Value: v, ProviderResolutionDetail: s.detail(&r)}
}

// changedFlags lists, sorted, the flags whose definition differs between
// two sets (added, removed or redefined). A change of the set's metadata
// or evaluators counts for every flag.
func changedFlags(old, next *flags.Set) []string {
	if old == nil {
		return slices.Clone(next.Keys())
	}
	od, nd := old.Document(), next.Document()
	all := !sameJSON(od.Metadata, nd.Metadata) || !sameJSON(od.Evaluators, nd.Evaluators)
	var out []string
	for k, f := range nd.Flags {
		if all || !sameJSON(od.Flags[k], f) {
			out = append(out, k)
		}
	}
	for k := range od.Flags {
		if _, ok := nd.Flags[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
