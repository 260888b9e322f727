// Package flags is Flagpole's flag engine: the flag-set model in flagd's flag
// definition format, its validation, the JsonLogic compiler and the evaluator
// that resolves a flag for an evaluation context with OpenFeature semantics.
//
// A flag set is parsed into a [Document] (JSON or YAML), compiled once into an
// immutable [Set], and evaluated many times concurrently without allocation on
// the common paths. The package also declares the [Store] contract that storage
// backends implement and the [Service] that performs validated, audited writes.
//
// # Input
//
// [Parse], [Compile] and [Load] accept flagd's format: "flags" as a map (or an
// array whose items carry "key"), "$evaluators" used as {"$ref": "name"},
// flag-set "metadata" and "$schema". YAML is read as YAML 1.2, so variant
// names such as on and off stay strings. Every problem is reported at once in
// a *[ValidationError] whose problems name their JSON path, for example
// flags.new-checkout.defaultVariant. Duplicate keys, unknown fields, unknown
// operators, wrong arity, a $ref to a missing evaluator, constant fractional
// weights that are not whole numbers and constant sem_ver operators or
// versions that cannot work are all rejected at load time, so a loaded rule
// always runs. Rules are bounded: nesting depth, operations after $ref
// expansion, and a per-evaluation work budget for loops and string building.
//
// # Changes
//
// [Set.Recompile] (and [CompileFrom] for a Document) builds the next version
// of a set from the previous one: flags whose canonical definition, the
// evaluators they expand and the set's metadata are unchanged keep their
// compiled form, and in JSON input the bytes of an unchanged flag are not even
// parsed again, so a change costs in proportion to what changed. The result
// is indistinguishable from a fresh [Load] (same Hash, Document, Info and
// resolutions), and its errors are Load's.
//
// # Evaluation
//
// Targeting follows JsonLogic as jsonlogic.com defines it (JavaScript's
// truthiness, == coercions and number formatting) plus flagd's operations:
//   - fractional: MurmurHash3 x86 32-bit, seed 0, of the bucketing value
//     (flag key + targeting key when no expression is given or it yields
//     null); bucket = (hash × total weight) >> 32; the first entry whose
//     running weight exceeds the bucket wins. Weights default to 1, negative
//     weights count as 0, a total above 2^31−1 or all weights 0 gives null,
//     and a single entry always wins.
//   - sem_ver: =, !=, <, <=, >, >=, ~ (same major.minor), ^ (same major);
//     a leading v or V, "1" and "1.2" shorthands, numbers as JavaScript
//     prints them; build metadata ignored; invalid input gives null.
//   - starts_with, ends_with: two strings, otherwise null.
//
// "$flagd.flagKey" and "$flagd.timestamp" (Unix seconds) are answered by the
// evaluator without copying the context. substr counts Unicode code points
// and string comparison orders by UTF-16 code units, as JavaScript does.
//
// Resolutions follow OpenFeature: STATIC without targeting, TARGETING_MATCH
// when a rule names a variant (true/false look up "true"/"false", numbers are
// stringified), DEFAULT when it yields null, DISABLED for a disabled flag,
// ERROR with GENERAL when a rule names no variant or returns an array or
// object, FLAG_NOT_FOUND for an unknown key and TYPE_MISMATCH from the typed
// accessors.
//
// The package does no I/O of its own and imports only the standard library and
// small hashing/YAML libraries.
package flags
