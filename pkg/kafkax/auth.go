package kafkax

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// The SASL mechanisms Config.SASL.Mechanism takes (upper or lower case).
const (
	MechanismNone        = "none"
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
	MechanismAWSMSKIAM   = "AWS_MSK_IAM"
)

var mechanisms = []string{MechanismNone, MechanismPlain, MechanismScramSHA256, MechanismScramSHA512,
	MechanismOAuthBearer, MechanismAWSMSKIAM}

// SASL says how this process authenticates to the brokers. Secrets are
// named by file, never given as values: Kubernetes mounts them from
// Secrets, and a file is re-read at each authentication, so a password or
// token rotated in its Secret is used by the next connection.
type SASL struct {
	// Mechanism is "" or none (no SASL), PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM.
	Mechanism string
	// Username is the user of PLAIN and SCRAM.
	Username string
	// PasswordFile holds the password of PLAIN and SCRAM.
	PasswordFile string
	// OAuthTokenFile holds the OAUTHBEARER token (a JWT).
	OAuthTokenFile string
	// OAuthExtensions are comma-separated key=value SASL extensions sent with
	// the token (Confluent Cloud: logicalCluster=lkc-…,identityPoolId=pool-…).
	OAuthExtensions string
}

func (s *SASL) register(l *config.Loader) {
	l.String(&s.Mechanism, "kafka-sasl-mechanism", "",
		"Kafka SASL mechanism: none, PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM")
	l.String(&s.Username, "kafka-sasl-username", "", "Kafka SASL user (PLAIN and SCRAM)")
	l.String(&s.PasswordFile, "kafka-sasl-password-file", "",
		"file holding the Kafka SASL password (PLAIN and SCRAM); re-read at each authentication")
	l.String(&s.OAuthTokenFile, "kafka-sasl-oauth-token-file", "",
		"file holding the OAUTHBEARER token; re-read at each authentication (projected tokens rotate)")
	l.String(&s.OAuthExtensions, "kafka-sasl-oauth-extensions", "",
		"OAUTHBEARER SASL extensions, comma-separated key=value (Confluent Cloud: logicalCluster=lkc-…,identityPoolId=pool-…)")
}

// mechanism is the canonical name of s.Mechanism, none for "".
func (s SASL) mechanism() string {
	m := strings.ToUpper(strings.TrimSpace(s.Mechanism))
	if m == "" || m == "NONE" {
		return MechanismNone
	}
	return m
}

var (
	envMechanism  = config.EnvName("kafka-sasl-mechanism")
	envUsername   = config.EnvName("kafka-sasl-username")
	envPassword   = config.EnvName("kafka-sasl-password-file")
	envToken      = config.EnvName("kafka-sasl-oauth-token-file")
	envExtensions = config.EnvName("kafka-sasl-oauth-extensions")
)

// validate checks the SASL settings against the mechanism; tls says
// whether the connection is encrypted.
func (s SASL) validate(tls bool) error {
	m := s.mechanism()
	switch m {
	case MechanismNone:
		for _, set := range []struct{ v, env string }{
			{s.Username, envUsername}, {s.PasswordFile, envPassword}, {s.OAuthTokenFile, envToken}, {s.OAuthExtensions, envExtensions},
		} {
			if set.v != "" {
				return fmt.Errorf("kafka: %s is set but %s is empty: name the mechanism it is for", set.env, envMechanism)
			}
		}
		return nil
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if s.Username == "" {
			return fmt.Errorf("kafka: SASL %s needs a user: set %s", m, envUsername)
		}
		if s.PasswordFile == "" {
			return fmt.Errorf("kafka: SASL %s needs a password: set %s to a file holding it", m, envPassword)
		}
		if _, err := readSecret(s.PasswordFile); err != nil {
			return fmt.Errorf("kafka: %s: %w", envPassword, err)
		}
	case MechanismOAuthBearer:
		if s.OAuthTokenFile == "" {
			return fmt.Errorf("kafka: SASL OAUTHBEARER needs a token: set %s to a file holding it", envToken)
		}
		if _, err := readSecret(s.OAuthTokenFile); err != nil {
			return fmt.Errorf("kafka: %s: %w", envToken, err)
		}
		if _, err := parseExtensions(s.OAuthExtensions); err != nil {
			return fmt.Errorf("kafka: %s: %w", envExtensions, err)
		}
	case MechanismAWSMSKIAM:
		// MSK's IAM listener (port 9098) is TLS only, and the signed
		// request must not travel in clear.
		if !tls {
			return fmt.Errorf("kafka: SASL AWS_MSK_IAM needs TLS: set %s=true", config.EnvName("kafka-tls"))
		}
	default:
		return fmt.Errorf("kafka: %s=%q is not a mechanism Sluice knows; use one of %s",
			envMechanism, s.Mechanism, strings.Join(mechanisms, ", "))
	}
	if m != MechanismOAuthBearer && s.OAuthTokenFile+s.OAuthExtensions != "" {
		return fmt.Errorf("kafka: %s and %s are for OAUTHBEARER, not %s", envToken, envExtensions, m)
	}
	if (m == MechanismOAuthBearer || m == MechanismAWSMSKIAM) && s.Username+s.PasswordFile != "" {
		return fmt.Errorf("kafka: %s and %s are for PLAIN and SCRAM, not %s", envUsername, envPassword, m)
	}
	return nil
}

// secretLimit bounds what a password or token file may hold: a JWT from a
// cloud identity provider is 1-4 KiB; 64 KiB leaves room and keeps a
// mistaken path (a log file) from being read whole at every connection.
const secretLimit = 64 << 10

// readSecret reads a password or token file (tlsconf.ReadSecretFile).
func readSecret(path string) (string, error) { return tlsconf.ReadSecretFile(path, secretLimit) }

// extensionKey is RFC 7628's key syntax; "auth" is reserved for the token.
var extensionKey = regexp.MustCompile(`^[A-Za-z]+$`)

func parseExtensions(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !extensionKey.MatchString(k) || k == "auth" {
			return nil, fmt.Errorf("%q is not key=value with a key of letters other than auth", kv)
		}
		if strings.ContainsAny(v, "\x01") {
			return nil, fmt.Errorf("the value of %s holds a control character", k)
		}
		out[k] = v
	}
	return out, nil
}

// mechanism builds the franz-go mechanism, nil for none. Credentials are
// read inside the function franz-go calls at each authentication (each new
// connection, and each re-authentication a broker's
// connections.max.reauth.ms asks for), never held from start.
func (s SASL) build() (sasl.Mechanism, error) {
	m := s.mechanism()
	user, passwordFile := s.Username, s.PasswordFile
	password := func() (string, error) {
		p, err := readSecret(passwordFile)
		if err != nil {
			return "", fmt.Errorf("kafka: %s: %w", envPassword, err)
		}
		return p, nil
	}
	var mech sasl.Mechanism
	switch m {
	case MechanismNone:
		return nil, nil
	case MechanismPlain:
		mech = plain.Plain(func(context.Context) (plain.Auth, error) {
			p, err := password()
			return plain.Auth{User: user, Pass: p}, err
		})
	case MechanismScramSHA256, MechanismScramSHA512:
		fn := func(context.Context) (scram.Auth, error) {
			p, err := password()
			return scram.Auth{User: user, Pass: p}, err
		}
		if m == MechanismScramSHA256 {
			mech = scram.Sha256(fn)
		} else {
			mech = scram.Sha512(fn)
		}
	case MechanismOAuthBearer:
		ext, err := parseExtensions(s.OAuthExtensions)
		if err != nil {
			return nil, fmt.Errorf("kafka: %s: %w", envExtensions, err)
		}
		tokenFile := s.OAuthTokenFile
		mech = oauth.Oauth(func(context.Context) (oauth.Auth, error) {
			tok, err := readSecret(tokenFile)
			if err != nil {
				return oauth.Auth{}, fmt.Errorf("kafka: %s: %w", envToken, err)
			}
			return oauth.Auth{Token: tok, Extensions: ext}, nil
		})
	case MechanismAWSMSKIAM:
		creds, err := processAWSCredentials()
		if err != nil {
			return nil, err
		}
		mech = awsMechanism(creds)
	default:
		return nil, fmt.Errorf("kafka: unknown SASL mechanism %q", s.Mechanism)
	}
	return tracked{Mechanism: mech, user: user}, nil
}

// processAWSCredentials loads the AWS SDK's default credential chain once
// per process (AWS_* variables, IRSA's web identity token, EKS Pod
// Identity, the instance role), wrapped by the SDK in its cache, which
// refreshes them before they expire: every client of the process shares
// it, so building a client never costs a round trip to STS.
var processAWSCredentials = sync.OnceValues(func() (awssdk.CredentialsProvider, error) {
	return loadAWSCredentials(context.Background())
})

func loadAWSCredentials(ctx context.Context) (awssdk.CredentialsProvider, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: loading AWS credentials for AWS_MSK_IAM: %w", err)
	}
	return cfg.Credentials, nil
}

func awsMechanism(creds awssdk.CredentialsProvider) sasl.Mechanism {
	return aws.ManagedStreamingIAM(func(ctx context.Context) (aws.Auth, error) {
		c, err := creds.Retrieve(ctx)
		if err != nil {
			return aws.Auth{}, fmt.Errorf("kafka: retrieving AWS credentials for AWS_MSK_IAM: %w", err)
		}
		return aws.Auth{AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken}, nil
	})
}

// authAttempt is one SASL authentication this process began.
type authAttempt struct {
	mechanism, user, addr string
}

// lastAuth is the most recent authentication the process began. A broker
// refusing credentials answers with an error code and no address, so
// Fatal names the broker from here: the authentication a refusal ends is
// the latest one begun unless the process authenticates to several
// brokers at the same instant, and then every one of them refuses the same
// credentials anyway.
var lastAuth atomic.Pointer[authAttempt]

// tracked records each authentication it begins (lastAuth) and turns a
// session that fails on the broker's answer into an *AuthError naming it.
type tracked struct {
	sasl.Mechanism
	user string
}

func (t tracked) Authenticate(ctx context.Context, host string) (sasl.Session, []byte, error) {
	a := &authAttempt{mechanism: t.Name(), user: t.user, addr: host}
	lastAuth.Store(a)
	s, first, err := t.Mechanism.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	return trackedSession{Session: s, attempt: a}, first, nil
}

// Close passes on to mechanisms that hold resources.
func (t tracked) Close() {
	if c, ok := t.Mechanism.(sasl.ClosingMechanism); ok {
		c.Close()
	}
}

type trackedSession struct {
	sasl.Session
	attempt *authAttempt
}

// Challenge fails with an *AuthError when the broker's answer ends the
// exchange: an OAUTHBEARER broker sends its verdict on a bad token as a
// JSON challenge, and a SCRAM server's final message may refuse us.
func (s trackedSession) Challenge(resp []byte) (bool, []byte, error) {
	done, out, err := s.Session.Challenge(resp)
	if err != nil {
		// What the broker sent is its reason (OAUTHBEARER's is JSON such as
		// {"status":"invalid_token"}); 200 bytes is plenty for it and keeps
		// a log line a line.
		said := strings.TrimSpace(string(resp))
		if len(said) > 200 {
			said = said[:200] + "…"
		}
		return done, out, authRefused(s.attempt, err, "the broker said "+said)
	}
	return done, out, nil
}

// AuthError is a connection to Kafka that the cluster refused and that
// waiting will not cure (see Fatal).
type AuthError = tlsconf.AuthError

// credentialSettings are the settings behind a mechanism's credentials.
func credentialSettings(mechanism string) []string {
	switch mechanism {
	case MechanismOAuthBearer:
		return []string{envToken, envExtensions}
	case MechanismAWSMSKIAM:
		return []string{"the AWS credentials (AWS_* variables, IRSA or Pod Identity role) and the role's kafka-cluster permissions"}
	}
	return []string{envUsername, envPassword}
}

// authRefused is the refusal of attempt; said is the broker's reason, if
// it gave one.
func authRefused(a *authAttempt, err error, said string) *AuthError {
	what := "SASL " + a.mechanism + " authentication"
	if a.user != "" {
		what += fmt.Sprintf(" as %q", a.user)
	}
	what += " refused by " + a.addr
	if said != "" {
		what += " (" + said + ")"
	}
	return &AuthError{Dependency: "kafka", What: what, Check: credentialSettings(a.mechanism), Err: err}
}

// brokerMessage is the text a broker sent with an error code: franz-go
// wraps the code as "<code's description>: <message>", and callers may
// have wrapped that in turn.
func brokerMessage(err error, code error) string {
	prefix := code.Error() + ": "
	for e := err; e != nil; e = errors.Unwrap(e) {
		if s := e.Error(); strings.HasPrefix(s, prefix) {
			return s[len(prefix):]
		}
	}
	return ""
}
