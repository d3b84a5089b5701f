package alerting

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/authwatch/authwatch/incident"
)

// Block Kit limits that Slack enforces with invalid_blocks; messages are
// cut to fit, never rejected. Source: the Block Kit reference for header,
// section, context and actions blocks.
const (
	maxBlocks        = 50
	maxHeaderText    = 150
	maxSectionText   = 3000
	maxFields        = 10
	maxFieldText     = 2000
	maxContextElems  = 10
	maxButtonText    = 75
	maxButtonURL     = 3000
	maxActionButtons = 25
	// maxFallbackText keeps the notification text short; Slack accepts
	// up to 40,000 characters but truncates display long before that.
	maxFallbackText = 3000
	// maxSampleText leaves room for the heading and code fences in a
	// section.
	maxSampleText = 2800
)

// message is one Slack message: blocks plus the fallback text used in
// notifications and by clients that cannot show blocks.
type message struct {
	Blocks []slack.Block
	Text   string
}

// truncate cuts s to at most n runes, ending with "…" when cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// escape makes s safe inside mrkdwn: Slack reads &, < and > as markup.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func code(s string) string {
	s = strings.ReplaceAll(s, "```", "'''")
	return "```" + truncate(escape(s), maxSampleText) + "```"
}

func mrkdwn(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, truncate(s, maxSectionText), false, false)
}

func section(s string) slack.Block {
	return slack.NewSectionBlock(mrkdwn(s), nil, nil)
}

func fieldsSection(pairs ...string) slack.Block {
	var fields []*slack.TextBlockObject
	for i := 0; i+1 < len(pairs) && len(fields) < maxFields; i += 2 {
		if pairs[i+1] == "" {
			continue
		}
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType,
			truncate("*"+pairs[i]+"*\n"+pairs[i+1], maxFieldText), false, false))
	}
	return slack.NewSectionBlock(nil, fields, nil)
}

func header(s string) slack.Block {
	return slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, truncate(s, maxHeaderText), true, false))
}

func contextLine(parts ...string) slack.Block {
	var elems []slack.MixedElement
	for _, p := range parts {
		if p != "" && len(elems) < maxContextElems {
			elems = append(elems, mrkdwn(p))
		}
	}
	return slack.NewContextBlock("", elems...)
}

// finish caps the block count and the fallback text.
func finish(blocks []slack.Block, text string) message {
	if len(blocks) > maxBlocks {
		blocks = append(blocks[:maxBlocks-1], section("_(message shortened)_"))
	}
	return message{Blocks: blocks, Text: truncate(text, maxFallbackText)}
}

func where(k incident.Key) string {
	if k.Namespace == "" {
		return k.Workload
	}
	return k.Namespace + "/" + k.Workload
}

func listNames(names []string, more int) string {
	s := strings.Join(names, ", ")
	if more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return escape(s)
}

// ago formats d rounded to seconds, and whole minutes or hours without
// the zero parts: "1m" rather than "1m0s".
func ago(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d != 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d != 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// threadMessage renders the parent message of a thread: the incident that
// opened it in full, and one line for each other incident that joined.
// With resolved set it renders the edited parent after the last resolve.
func (n *slackNotifier) threadMessage(th *Thread, resolved bool) message {
	primary := th.primary()
	msg := n.incidentMessage(&primary, resolved)
	if len(th.Order) < 2 {
		return msg
	}
	var also strings.Builder
	also.WriteString("*Also in this thread*\n")
	for _, id := range th.Order[1:] {
		in := th.Incidents[id]
		fmt.Fprintf(&also, "• %s: %d matches, %s\n", escape(in.Key.Policy), in.Count, in.State)
	}
	// Insert after the header and fields, before the samples.
	blocks := append([]slack.Block{}, msg.Blocks[:2]...)
	blocks = append(blocks, section(also.String()))
	blocks = append(blocks, msg.Blocks[2:]...)
	return finish(blocks, msg.Text)
}

// incidentMessage renders one incident as a parent message. With resolved
// set it renders the edited parent after the resolve.
func (n *slackNotifier) incidentMessage(in *incident.Incident, resolved bool) message {
	if in.IsStorm() {
		return n.stormMessage(in, resolved)
	}
	title := fmt.Sprintf("%s: %s", in.Key.Policy, where(in.Key))
	icon := "🔴 "
	if resolved {
		icon = "✅ Resolved: "
	}
	blocks := []slack.Block{
		header(icon + title),
		fieldsSection(
			"Policy", escape(in.Key.Policy),
			"Namespace", escape(in.Key.Namespace),
			"Workload", escape(in.Key.Workload),
			"Category", escape(in.Category)+" ("+escape(in.Severity)+")",
			"Matches", fmt.Sprintf("%d in total, %d in the last %s (threshold %d)", in.Count, in.InWindow, ago(in.Window), in.Threshold),
			"Rules", escape(ruleList(in.Rules)),
			"Pods", listNames(in.Pods, in.MorePods),
			"Containers", listNames(in.Containers, 0),
		),
	}
	if resolved {
		blocks = append(blocks, section(fmt.Sprintf("Resolved after %s without a match; open for %s.",
			ago(in.ResolvedAt.Sub(in.LastSeen)), ago(in.ResolvedAt.Sub(in.FiredAt)))))
	}
	blocks = append(blocks, section("*First match* ("+in.First.Time.UTC().Format(time.RFC3339)+", "+escape(in.First.Pod)+")\n"+code(in.First.Text)))
	if in.Count > 1 {
		blocks = append(blocks, section("*Latest match* ("+in.Latest.Time.UTC().Format(time.RFC3339)+", "+escape(in.Latest.Pod)+")\n"+code(in.Latest.Text)))
	}
	if b := n.linkButtons(in); b != nil {
		blocks = append(blocks, b)
	}
	blocks = append(blocks, contextLine("authwatch incident `"+in.ID+"`", "fired "+in.FiredAt.UTC().Format(time.RFC3339)))
	state := "firing"
	if resolved {
		state = "resolved"
	}
	text := fmt.Sprintf("[%s] %s: %d matches", state, title, in.Count)
	return finish(blocks, n.redactor.String(text))
}

func (n *slackNotifier) stormMessage(in *incident.Incident, resolved bool) message {
	title := fmt.Sprintf("Storm: %d workloads started failing within the storm window", len(in.Members)+in.MoreMembers)
	if resolved {
		title = "✅ Resolved: " + title
	} else {
		title = "🌩 " + title
	}
	blocks := []slack.Block{
		header(title),
		section("Incidents past the storm threshold are folded into this message instead of opening threads of their own."),
	}
	blocks = append(blocks, memberSections(in, maxBlocks-len(blocks)-2)...)
	if in.Latest.Text != "" {
		blocks = append(blocks, section("*Latest match* ("+escape(in.Latest.Pod)+")\n"+code(in.Latest.Text)))
	}
	blocks = append(blocks, contextLine("authwatch storm `"+in.ID+"`"))
	return finish(blocks, n.redactor.String(title))
}

// memberSections lists the storm's workloads, one line each, in as many
// sections of at most maxSectionText characters as it takes, up to
// maxSections. Lines that do not fit are counted in a last "and N more"
// line.
func memberSections(in *incident.Incident, maxSections int) []slack.Block {
	var blocks []slack.Block
	var cur strings.Builder
	left := in.MoreMembers
	for i, k := range in.Members {
		line := truncate(fmt.Sprintf("• %s (%s)", escape(where(k)), escape(k.Policy)), 500) + "\n"
		if cur.Len()+len(line) > maxSectionText-100 {
			if len(blocks) == maxSections-1 {
				left += len(in.Members) - i
				break
			}
			blocks = append(blocks, section(cur.String()))
			cur.Reset()
		}
		cur.WriteString(line)
	}
	if left > 0 {
		fmt.Fprintf(&cur, "• and %d more\n", left)
	}
	if cur.Len() > 0 {
		blocks = append(blocks, section(cur.String()))
	}
	return blocks
}

// updateMessage renders a coalesced thread reply: the matches of each
// open incident since the last message about it.
func (n *slackNotifier) updateMessage(th *Thread) message {
	var lines []string
	var latest incident.Sample
	for _, id := range th.Order {
		in := th.Incidents[id]
		if in.State == incident.StateResolved {
			continue
		}
		if in.IsStorm() {
			lines = append(lines, fmt.Sprintf("The storm now covers %d workloads.", len(in.Members)+in.MoreMembers))
		} else {
			lines = append(lines, fmt.Sprintf("%s: %d more matches (%d in total, %d in the last %s).",
				in.Key.Policy, in.Count-th.Replied[id], in.Count, in.InWindow, ago(in.Window)))
		}
		if in.Latest.Time.After(latest.Time) || latest.Text == "" {
			latest = in.Latest
		}
	}
	text := strings.Join(lines, "\n")
	if text == "" {
		text = "No new matches."
	}
	blocks := []slack.Block{section(escape(text))}
	if primary := th.primary(); primary.IsStorm() && primary.State != incident.StateResolved {
		// The parent lists the workloads at the start; the reply lists them
		// as they are now.
		blocks = append(blocks, memberSections(&primary, maxBlocks-3)...)
	}
	if latest.Text != "" {
		blocks = append(blocks, section("*Latest match* ("+latest.Time.UTC().Format(time.RFC3339)+", "+escape(latest.Pod)+")\n"+code(latest.Text)))
	}
	return finish(blocks, n.redactor.String(text))
}

// joinMessage renders the reply for an incident of another policy that
// opened for the thread's workload.
func (n *slackNotifier) joinMessage(in *incident.Incident) message {
	text := fmt.Sprintf("Policy %s also fired: %d matches, %d in the last %s (threshold %d).",
		in.Key.Policy, in.Count, in.InWindow, ago(in.Window), in.Threshold)
	return finish([]slack.Block{section(escape(text))}, n.redactor.String(text))
}

func (n *slackNotifier) resolvedReply(in *incident.Incident) message {
	text := fmt.Sprintf("✅ Resolved (%s): no match for %s. %d matches in total over %s.",
		in.Key.Policy, ago(in.ResolvedAt.Sub(in.LastSeen)), in.Count, ago(in.ResolvedAt.Sub(in.FiredAt)))
	if in.IsStorm() {
		text = "✅ Resolved: every folded incident of this storm has resolved."
	}
	return finish([]slack.Block{section(escape(text))}, text)
}

func ruleList(r map[string]int) string {
	var parts []string
	for id, c := range r {
		parts = append(parts, fmt.Sprintf("%s ×%d", id, c))
	}
	sortStrings(parts)
	return strings.Join(parts, ", ")
}

func (n *slackNotifier) linkButtons(in *incident.Incident) slack.Block {
	var buttons []slack.BlockElement
	kind, name, _ := strings.Cut(in.Key.Workload, "/")
	data := LinkData{ID: in.ID, Policy: in.Key.Policy, Namespace: in.Key.Namespace, Workload: in.Key.Workload, Kind: kind, Name: name}
	for i, l := range n.cfg.Links {
		if len(buttons) >= maxActionButtons || l.tmpl == nil {
			break
		}
		var b strings.Builder
		if err := l.tmpl.Execute(&b, data); err != nil || b.Len() > maxButtonURL {
			n.once.log(n.logger, fmt.Sprintf("link %d", i), "slack link template failed, button left out",
				"link", l.Text, "err", err, "url_length", b.Len())
			continue
		}
		btn := slack.NewButtonBlockElement(fmt.Sprintf("link-%d", i), "",
			slack.NewTextBlockObject(slack.PlainTextType, truncate(l.Text, maxButtonText), false, false))
		btn.URL = b.String()
		buttons = append(buttons, btn)
	}
	if len(buttons) == 0 {
		return nil
	}
	return slack.NewActionBlock("links", buttons...)
}

func sortStrings(s []string) { slices.Sort(s) }
