package sluicev1

import "strings"

// Label is the outcome's short lower-case name (success, http_error, …) as
// stored in the delivery log and shown by the API.
func (o AttemptOutcome) Label() string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "ATTEMPT_OUTCOME_"))
}

// Label is the origin's short lower-case name (router, replay, recover).
func (o DeliveryOrigin) Label() string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "DELIVERY_ORIGIN_"))
}

// Label is the source's short lower-case name (http, kafka, system).
func (s EventSource) Label() string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "EVENT_SOURCE_"))
}
