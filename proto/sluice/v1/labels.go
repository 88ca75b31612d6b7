package sluicev1

import "strings"

// Labels are computed once: Label runs for every attempt (metrics, the
// delivery log), and lower-casing the enum name each time would allocate.
var (
	outcomeLabels = labels(AttemptOutcome_name, "ATTEMPT_OUTCOME_")
	originLabels  = labels(DeliveryOrigin_name, "DELIVERY_ORIGIN_")
	sourceLabels  = labels(EventSource_name, "EVENT_SOURCE_")
)

func labels(names map[int32]string, prefix string) map[int32]string {
	out := make(map[int32]string, len(names))
	for v, name := range names {
		out[v] = strings.ToLower(strings.TrimPrefix(name, prefix))
	}
	return out
}

// label is the label of v, or of its String form for a value this code
// does not know (a newer writer's).
func label(table map[int32]string, v int32, s, prefix string) string {
	if l, ok := table[v]; ok {
		return l
	}
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

// Label is the outcome's short lower-case name (success, http_error, …) as
// stored in the delivery log and shown by the API.
func (o AttemptOutcome) Label() string {
	return label(outcomeLabels, int32(o), o.String(), "ATTEMPT_OUTCOME_")
}

// Label is the origin's short lower-case name (router, replay, recover).
func (o DeliveryOrigin) Label() string {
	return label(originLabels, int32(o), o.String(), "DELIVERY_ORIGIN_")
}

// Label is the source's short lower-case name (http, kafka, system).
func (s EventSource) Label() string {
	return label(sourceLabels, int32(s), s.String(), "EVENT_SOURCE_")
}
