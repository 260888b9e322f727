package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// maxInput bounds the files and stdin the CLI reads.
const maxInput = 32 << 20

// readInput reads the file at path, or standard input when path is "-".
func (a *app) readInput(path string) ([]byte, error) {
	if path == "-" {
		data, err := io.ReadAll(io.LimitReader(a.stdin, maxInput+1))
		if err != nil {
			return nil, fmt.Errorf("reading standard input: %w", err)
		}
		if len(data) > maxInput {
			return nil, fmt.Errorf("standard input: larger than %d MiB", maxInput>>20)
		}
		return data, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxInput {
		return nil, fmt.Errorf("%s: larger than %d MiB", path, maxInput>>20)
	}
	return data, nil
}

// formatOf says how to read or write path: "yaml" for .yaml/.yml, "json"
// for .json, "" when the name does not say (stdin, other extensions).
func formatOf(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return "yaml"
	case ".json":
		return "json"
	}
	return ""
}

// asJSON returns data as JSON. A .json file must be JSON and a .yaml/.yml
// file YAML; anything else is taken as JSON when it parses as JSON, and as
// YAML otherwise. name is used in error messages.
func asJSON(data []byte, name string) (json.RawMessage, error) {
	format := formatOf(name)
	if format == "" {
		if json.Valid(data) {
			format = "json"
		} else {
			format = "yaml"
		}
	}
	if format == "json" {
		if err := checkJSON(data); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return bytes.TrimSpace(data), nil
	}
	out, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: invalid YAML: %w", name, err)
	}
	return out, nil
}

// checkJSON reports invalid JSON with the line and column of the problem.
func checkJSON(data []byte) error {
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(data, se.Offset-1) // Offset counts the offending byte
		return fmt.Errorf("invalid JSON at line %d, column %d: %s", line, col, se.Error())
	}
	return fmt.Errorf("invalid JSON: %w", err)
}

// position converts a 0-based byte offset into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// readDocument reads a JSON or YAML file (or stdin for "-") as JSON.
func (a *app) readDocument(path string) (json.RawMessage, error) {
	data, err := a.readInput(path)
	if err != nil {
		return nil, err
	}
	name := path
	if path == "-" {
		name = "standard input"
	}
	return asJSON(data, name)
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so that a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
