package alerting

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/authwatch/authwatch/incident"
)

// Note is a report about an incident that is not one of its transitions,
// such as a step of a token rotation. Only Slack delivers notes; the
// Alertmanager and webhook notifiers ignore them.
type Note struct {
	// Incident is the ID of the incident whose Slack thread gets the note
	// as a reply. Empty, or naming an incident without an open thread, the
	// note goes to the thread of Group instead.
	Incident string
	// Group keeps the notes of one report, such as a rotation, in one
	// Slack thread. The first note delivered picks it: the incident's
	// thread, or else a new message headed by Title. Later notes of the
	// group reply there, also after the incident's thread closed on
	// resolve. A rotation ID is usual.
	Group string
	// Key routes the new message of a group like an incident of that
	// namespace and workload.
	Key incident.Key
	// Title heads the new message of a group.
	Title string
	// Text is the note in plain text; secrets in it are masked.
	Text string
	// Last ends the group: after it is delivered, the next note of the
	// group starts a new message.
	Last bool
	Time time.Time
}

// noteDelay is how long a note waits for later notes of the same thread,
// so that steps that finish within a second go out as one message.
const noteDelay = time.Second

// noteBatch holds the notes queued for one thread. Queued is set while a
// job for the batch is in a channel queue; later notes join the batch
// until that job sends it.
type noteBatch struct {
	// Thread is the ID of the incident thread to reply in; empty for a
	// group.
	Thread  string    `json:"thread,omitempty"`
	Group   string    `json:"group,omitempty"`
	Channel string    `json:"channel"`
	Title   string    `json:"title,omitempty"`
	Lines   []string  `json:"lines"`
	Last    bool      `json:"last,omitempty"`
	Since   time.Time `json:"since"`
	Queued  bool      `json:"-"`
}

// noteThread is the Slack message that a group of notes replies to.
type noteThread struct {
	Channel   string `json:"channel"`
	ChannelID string `json:"channel_id,omitempty"`
	TS        string `json:"ts,omitempty"`
}

// Note queues n for Slack through the queue of the channel it goes to, with
// the same rate limit, retries and redaction as incident messages. Notes
// for one thread that arrive while an earlier one waits go out together.
// It does no network I/O. Without Slack configured the note is dropped
// and logged at debug level.
func (d *Dispatcher) Note(n Note) {
	d.setMu.RLock()
	defer d.setMu.RUnlock()
	n.Title = d.redactor.String(n.Title)
	n.Text = d.redactor.String(n.Text)
	if n.Time.IsZero() {
		n.Time = d.now()
	}
	if d.set.slack == nil {
		d.logger.Debug("note dropped: slack is not configured", "incident", n.Incident, "group", n.Group)
		return
	}
	d.set.slack.handleNote(n)
}

// handleNote adds note to the batch of its thread and queues a job for the
// batch unless one is queued.
func (n *slackNotifier) handleNote(note Note) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b *noteBatch
	var key string
	if th := n.threads[n.byIncident[note.Incident]]; note.Incident != "" && th != nil && n.client != nil {
		key = "thread\x00" + th.ID
		if b = n.notes[key]; b == nil {
			b = &noteBatch{Thread: th.ID, Group: note.Group, Channel: th.Channel, Title: note.Title}
		}
	} else {
		group := note.Group
		if group == "" {
			group = note.Incident
		}
		key = "group\x00" + group
		if b = n.notes[key]; b == nil {
			ch := n.route(note.Key)
			if nt := n.noteThreads[group]; nt != nil {
				ch = nt.Channel
			}
			b = &noteBatch{Group: group, Channel: ch, Title: note.Title}
		}
	}
	if len(b.Lines) == 0 {
		b.Since = note.Time
	}
	b.Lines = append(b.Lines, note.Text)
	b.Last = b.Last || note.Last
	n.notes[key] = b
	if !b.Queued {
		b.Queued = true
		n.queues[b.Channel].push(slackJob{Kind: jobNote, Thread: key, Since: note.Time})
	}
}

// doNote sends the batch of job after noteDelay, as a reply in its
// thread or as a new message. Notes that joined the batch while it was
// sent are queued again. It returns ctx.Err() when ctx ended, so the job
// stays queued.
func (n *slackNotifier) doNote(ctx context.Context, ch string, job slackJob) error {
	if !sleep(ctx, noteDelay-n.d.now().Sub(job.Since)) {
		return ctx.Err()
	}
	n.mu.Lock()
	b := n.notes[job.Thread]
	if b == nil {
		n.mu.Unlock()
		return fmt.Errorf("slack: no notes for %q", job.Thread)
	}
	sent := len(b.Lines)
	text := strings.Join(b.Lines, "\n")
	last := b.Last
	var channelID, threadTS string
	title := b.Title
	if th := n.threads[b.Thread]; b.Thread != "" && th != nil && th.TS != "" {
		channelID, threadTS = th.ChannelID, th.TS
	} else if nt := n.noteThreads[b.Group]; b.Group != "" && nt != nil && nt.TS != "" {
		channelID, threadTS = nt.ChannelID, nt.TS
	}
	if b.Thread != "" && threadTS == "" && title == "" {
		// The incident's parent message never went out: post the note
		// on its own, naming the incident.
		title = "Incident " + b.Thread
	}
	n.mu.Unlock()

	msg := noteMessage(title, text, threadTS == "")
	label := "slack:" + ch
	var sentCh, sentTS string
	send := func(ctx context.Context) error {
		var err error
		sentCh, sentTS, err = n.post(ctx, ch, channelID, threadTS, false, "", msg)
		return err
	}
	err := n.d.attempt(ctx, label, job.Since, 0, send, n.classify)
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		v := n.classify(err)
		n.once.log(n.logger, label+" "+v.reason, "slack notification failed permanently",
			"channel", ch, "notes", job.Thread, "reason", v.reason, "fix", slackFix(v.reason, ch), "err", err)
		n.setAuthErr(v.reason, err)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	if err == nil && b.Group != "" && n.client != nil && !last {
		// Later notes of the group reply in the same thread, also after
		// the incident's thread closed on resolve.
		nt := &noteThread{Channel: ch, ChannelID: channelID, TS: threadTS}
		if threadTS == "" {
			nt.ChannelID, nt.TS = sentCh, sentTS
		}
		n.noteThreads[b.Group] = nt
	}
	if last {
		delete(n.noteThreads, b.Group)
		b.Last = false
	}
	b.Lines = b.Lines[sent:]
	if len(b.Lines) == 0 {
		delete(n.notes, job.Thread)
		return err
	}
	// Notes that arrived during the send: their own job, at the end of
	// the queue.
	b.Since = n.d.now()
	n.queues[ch].push(slackJob{Kind: jobNote, Thread: job.Thread, Since: b.Since})
	return err
}

// noteMessage renders notes: the lines as a reply, or under title as a
// new message.
func noteMessage(title, text string, standalone bool) message {
	body := escape(text)
	fallback := text
	if standalone && title != "" {
		body = "*" + escape(title) + "*\n" + body
		fallback = title + "\n" + text
	}
	return finish([]slack.Block{section(body)}, fallback)
}

// exportNotes returns copies of the queued note batches and group
// threads; the caller holds n.mu.
func (n *slackNotifier) exportNotes() (map[string]*noteBatch, map[string]*noteThread) {
	var batches map[string]*noteBatch
	for k, b := range n.notes {
		if batches == nil {
			batches = map[string]*noteBatch{}
		}
		c := *b
		c.Lines = append([]string(nil), b.Lines...)
		batches[k] = &c
	}
	var threads map[string]*noteThread
	for k, nt := range n.noteThreads {
		if threads == nil {
			threads = map[string]*noteThread{}
		}
		c := *nt
		threads[k] = &c
	}
	return batches, threads
}

// importNotes restores note batches and group threads and queues a job
// for every batch whose channel is still configured. The others are
// dropped and logged; importState counts their queued jobs as dropped.
func (n *slackNotifier) importNotes(batches map[string]*noteBatch, threads map[string]*noteThread) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, nt := range threads {
		if _, ok := n.queues[nt.Channel]; ok {
			n.noteThreads[k] = nt
		}
	}
	for k, b := range batches {
		q, ok := n.queues[b.Channel]
		if !ok {
			n.logger.Warn("slack notes dropped: channel no longer configured", "channel", b.Channel, "notes", len(b.Lines))
			continue
		}
		b.Queued = true
		n.notes[k] = b
		q.push(slackJob{Kind: jobNote, Thread: k, Since: b.Since})
	}
}
