package bridge

import (
	"context"

	"github.com/bridgemq/server/broker"
)

// Bridge is what the tests drive: a node's broker core (broker.Broker, whose
// methods document the behaviour), over the in-memory store
// (broker.NewMemory) or the Redis bridge (newTestRedis), so that one
// contract suite checks both.
type Bridge interface {
	Attach(ctx context.Context, clientID, owner string, sub Subscriber, life Lifetime, will *Message) (*StoredSession, error)
	Detach(ctx context.Context, clientID string, sub Subscriber, state *StoredSession) error
	Subscribe(ctx context.Context, clientID, filter string, qos byte) error
	SubscribeMany(ctx context.Context, clientID string, subs []Subscription) error
	Unsubscribe(ctx context.Context, clientID, filter string) error
	Publish(ctx context.Context, msg *Message) error
	PublishAsync(ctx context.Context, msg *Message, done func(error))
	PublishWill(ctx context.Context, clientID string, sub Subscriber, will *Message) (bool, error)
	RetainedTopics(ctx context.Context, filter string) ([]string, error)
	RetainedMessages(ctx context.Context, topics []string, maxBytes int) ([]*Message, int, error)
	Ready(ctx context.Context) error
	Stats() map[string]int64
	Close() error
}

var (
	_ Bridge = (*broker.Broker)(nil)
	_ Bridge = (*testNode)(nil)
)
