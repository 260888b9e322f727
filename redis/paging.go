package redis

import (
	"context"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Newest-first pages over a time index: a sorted set of IDs scored by a time
// in milliseconds (runs by creation, notifications by when they happened).
// A page's cursor is "MILLIS:ID" of its last item; the next page starts
// below it, skipping the IDs at that millisecond that sort at or above ID
// (ZREVRANGEBYSCORE returns ties in descending ID order), so items written
// between two page reads never shift the pages.

// timeCursor is the cursor of a page whose last item is id at t.
func timeCursor(t time.Time, id string) string {
	return ms(t) + ":" + id
}

// pagePos is where a newest-first scan starts: at most upper (a score, or
// "+inf"), past afterID within that score.
type pagePos struct {
	upper, afterID string
}

// parseTimeCursor reads a [timeCursor]; "" is the first page. Errors: a
// *canary.ValidationError naming "cursor" when it is malformed or validID
// rejects its ID.
func parseTimeCursor(cursor string, validID func(string) bool) (pagePos, error) {
	if cursor == "" {
		return pagePos{upper: "+inf"}, nil
	}
	m, id, ok := strings.Cut(cursor, ":")
	if _, err := strconv.ParseInt(m, 10, 64); !ok || err != nil || !validID(id) {
		return pagePos{}, validationError("cursor", "is not the next value of an earlier page")
	}
	return pagePos{upper: m, afterID: id}, nil
}

// scanNewest reads index newest first from pos, in chunks sized for pages of
// limit items (readers may skip IDs whose item is gone or filtered out), and
// calls fn with each chunk's IDs until fn reports done or the index ends.
// Errors: fn's, or a read failure as ctranslate(op) reports it.
func (s *Store) scanNewest(ctx context.Context, op, index string, pos pagePos, limit int, fn func(ids []string) (done bool, err error)) error {
	chunk := max(2*limit, 64)
	for offset := 0; ; {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, index, &goredis.ZRangeBy{Max: pos.upper, Min: "-inf", Offset: int64(offset), Count: int64(chunk)}).Result()
		if err != nil {
			return ctranslate(op, err)
		}
		offset += len(zs)
		ids := make([]string, 0, len(zs))
		for _, z := range zs {
			id, _ := z.Member.(string)
			if pos.afterID != "" && strconv.FormatInt(int64(z.Score), 10) == pos.upper && id >= pos.afterID {
				continue // at or before the cursor within its millisecond
			}
			ids = append(ids, id)
		}
		if done, err := fn(ids); done || err != nil {
			return err
		}
		if len(zs) < chunk {
			return nil
		}
	}
}
