"""What only a person can set: the OpenAI key in its secret and the alarm e-mails, in the config and,
once deployed, confirmed by each recipient."""

from __future__ import annotations

from taskrouter.doctor.context import Context, outputs
from taskrouter.doctor.findings import Finding, blocks, ok, skipped, unchecked
from taskrouter.doctor.stage import StageSettings, is_placeholder
from taskrouter.operations.unseen import ROUTER_FUNCTION_OUTPUT, NotTheRouter, unseen_tasks

CONFIRMATION_PENDING = "PendingConfirmation"  # ListSubscriptionsByTopic's SubscriptionArn until confirmed


def alarm_emails(stage: StageSettings) -> Finding:
    """The committed stages.toml holds example.com addresses: alarms sent there reach no one."""
    placeholders = [email for email in stage.alarm_emails if is_placeholder(email)]
    if placeholders:
        return blocks("alarm e-mails", f"{', '.join(placeholders)} in alarm_emails of {stage.table} reach no one",
                      f"put your addresses there, then `npx cdk deploy '{stage.name}/*'`")
    return ok("alarm e-mails", f"{len(stage.alarm_emails)} in {stage.table}")


def openai_secret(ctx: Context) -> Finding:
    """The Operations stack creates the secret with a random value CloudFormation generates (its
    first and only version) until someone puts the key: a second version means it was set. Reads the
    secret's metadata only, never its value."""
    check = "openai secret"
    arn = _deployed_output(ctx, check, "Operations", "OpenAISecretArn")
    if isinstance(arn, Finding):
        return arn
    secret = ctx.aws.call("secretsmanager", "DescribeSecret", SecretId=arn)
    if len(secret.get("VersionIdsToStages", {})) <= 1:
        return blocks(
            check, "it still holds the random value CloudFormation generated: the fallback cannot call OpenAI",
            f"aws secretsmanager put-secret-value --region {ctx.region} --secret-id {arn} --secret-string \"sk-...\"",
        )
    changed = secret.get("LastChangedDate")
    return ok(check, f"set{f' (last changed {changed:%Y-%m-%d})' if changed else ''}")


def alarm_subscriptions(ctx: Context) -> Finding:
    """Each address of the stage subscribed to the alarm topic, and confirmed by its recipient (an
    unconfirmed e-mail subscription receives nothing, and expires)."""
    check = "alarm subscriptions"
    topic = _deployed_output(ctx, check, "Monitoring", "AlarmTopicArn")
    if isinstance(topic, Finding):
        return topic
    wanted = [email for email in ctx.stage.alarm_emails if not is_placeholder(email)]
    if not wanted:
        return skipped(check, "no address of the stage's is a real one (alarm e-mails, above)")
    subscribed = {
        str(subscription.get("Endpoint", "")).lower(): subscription.get("SubscriptionArn")
        for subscription in ctx.aws.items("sns", "ListSubscriptionsByTopic", "Subscriptions", TopicArn=topic)
        if subscription.get("Protocol") == "email"
    }
    pending = [email for email in wanted if subscribed.get(email.lower()) == CONFIRMATION_PENDING]
    missing = [email for email in wanted if email.lower() not in subscribed]
    resend = (f"aws sns subscribe --topic-arn {topic} --protocol email --notification-endpoint ADDRESS "
              f"--region {ctx.region}")
    if missing:
        return blocks(check, f"{', '.join(missing)} not subscribed to the alarm topic (a stage deployed before the "
                             "address was added, or a confirmation that expired)",
                      f"`{ctx.deploy_command}`, or send a new confirmation: {resend}")
    if pending:
        return blocks(check, f"{', '.join(pending)} never confirmed the subscription: no alarm reaches them",
                      "click the link of the e-mail \"AWS Notification - Subscription Confirmation\" (check the spam "
                      f"folder); to send it again: {resend}")
    return ok(check, f"{len(wanted)} confirmed on the alarm topic")


def unseen(ctx: Context) -> Finding:
    """Live tasks the serving adapter never saw: never blocking (the router routes them, the teacher
    samples them more), but what tells when to retrain."""
    check = "unseen tasks"
    router = _deployed_output(ctx, check, "Api", ROUTER_FUNCTION_OUTPUT)
    if isinstance(router, Finding):
        return router
    try:
        return ok(check, unseen_tasks(ctx.aws.call, router).describe())
    except NotTheRouter as error:
        return unchecked(check, str(error), ctx.deploy_command)


def _deployed_output(ctx: Context, check: str, stack_id: str, output: str) -> str | Finding:
    """An output of the stage's stack `stack_id`, or the finding that says why it cannot be had: the
    stack not deployed (skipped), or deployed without it (could not be checked: deploy again)."""
    name = f"{ctx.stage.name}-{stack_id}"
    stack = ctx.stack(name)
    if stack is None:
        return skipped(check, f"not deployed (no stack {name} in {ctx.region})")
    value = outputs(stack).get(output)
    if value is None:
        return unchecked(check, f"stack {name} ({stack['StackStatus']}) has no output {output}", ctx.deploy_command)
    return value
