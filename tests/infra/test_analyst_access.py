"""The analysts' policy (infra/capture.py, `AnalystPolicy`) and the capture key's policy, held to the
permissions AWS documents for an Athena query over SSE-KMS data in S3 with the Glue Data Catalog.

moto checks IAM loosely and its Athena runs no SQL, so each documented need is a row below, evaluated
against the synthesized statements with IAM's matching rules (action names case-insensitive, `*` and `?`
in actions and resources, the condition operators the policy uses; an explicit Deny wins). The rows an
analyst must be refused keep the policy least-privileged.

AWS's documentation each row follows:
- [encrypted] Athena User Guide, "Permissions to encrypted data in Amazon S3"
  (https://docs.aws.amazon.com/athena/latest/ug/encryption.html#permissions-for-encrypting-and-decrypting-data):
  "kms:Decrypt is the minimum allowed action for an Athena user to work with an encrypted dataset. To
  work with encrypted query results, the minimum allowed actions are kms:GenerateDataKey and kms:Decrypt."
- [workgroup] Athena User Guide, "Example workgroup policies", "Example policy for running queries in a
  specified workgroup" (https://docs.aws.amazon.com/athena/latest/ug/example-policies-workgroup.html):
  athena:GetWorkGroup, StartQueryExecution, StopQueryExecution, GetQueryExecution,
  BatchGetQueryExecution, ListQueryExecutions, GetQueryResults, GetQueryResultsStream on the workgroup;
  ListWorkGroups and the data catalogue's List/Get actions for the console.
- [glue] Athena User Guide, "Configure access to databases and tables in the AWS Glue Data Catalog"
  (https://docs.aws.amazon.com/athena/latest/ug/fine-grained-access-to-glue-resources.html): an action
  on a table needs permission on the table and all its ancestors, its database and the catalog;
  glue:GetDatabase(s) on the catalog and the database.
- [s3] Athena User Guide, "Control access to Amazon S3 from Athena"
  (https://docs.aws.amazon.com/athena/latest/ug/s3-permissions.html): a user's own S3 permissions pass
  through Athena (s3:ListBucket on the bucket, object actions on its objects); for a query results
  location, the grants of the managed policy AmazonAthenaFullAccess ("AWS managed policies for Amazon
  Athena"): s3:GetBucketLocation, GetObject, ListBucket, ListBucketMultipartUploads,
  ListMultipartUploadParts, AbortMultipartUpload, PutObject.
- [key policy] AWS KMS Developer Guide, "Default key policy", "Allows access to the AWS account and
  enables IAM policies" (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html):
  without the account's statement an IAM policy's Allow on the key has no effect.
- [via] AWS KMS Developer Guide, "kms:ViaService" (conditions-kms.html): S3's SSE-KMS requests reach KMS
  from `s3.<region>.amazonaws.com`, which the policy requires.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest

from infra.capture import ATHENA_RESULTS_PREFIX, RECORDS_PREFIX
from tests.infra.conftest import STAGES

ACCOUNT = "111122223333"  # the synthesized templates leave the account to the deploy: any will do
BUCKET = "dev-capture-captured-bucket"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
CAPTURING = sorted(name for name, config in STAGES.items() if config.capture.enabled)

# (the need, as the documentation names it; action; resource; request context)
REQUIRED = [
    ("[workgroup] start a query", "athena:StartQueryExecution", "{workgroup}", {}),
    ("[workgroup] stop it", "athena:StopQueryExecution", "{workgroup}", {}),
    ("[workgroup] its state", "athena:GetQueryExecution", "{workgroup}", {}),
    ("[workgroup] states in a batch", "athena:BatchGetQueryExecution", "{workgroup}", {}),
    ("[workgroup] the recent queries", "athena:ListQueryExecutions", "{workgroup}", {}),
    ("[workgroup] its results", "athena:GetQueryResults", "{workgroup}", {}),
    ("[workgroup] its results streamed (JDBC/ODBC)", "athena:GetQueryResultsStream", "{workgroup}", {}),
    ("[workgroup] the workgroup's settings", "athena:GetWorkGroup", "{workgroup}", {}),
    ("[workgroup] the console's workgroup list", "athena:ListWorkGroups", "*", {}),
    ("[workgroup] the console's catalogue", "athena:GetDatabase", "{datacatalog}", {}),
    ("[workgroup] the console's tables", "athena:ListTableMetadata", "{datacatalog}", {}),
    ("[glue] the catalog", "glue:GetDatabase", "{catalog}", {}),
    ("[glue] the database", "glue:GetDatabase", "{database}", {}),
    ("[glue] the databases, the catalog's", "glue:GetDatabases", "{catalog}", {}),
    ("[glue] the table, on the catalog", "glue:GetTable", "{catalog}", {}),
    ("[glue] the table, on its database", "glue:GetTable", "{database}", {}),
    ("[glue] the table", "glue:GetTable", "{table}", {}),
    ("[glue] the database's tables", "glue:GetTables", "{database}", {}),
    ("[glue] the table's partitions (projected: none stored)", "glue:GetPartitions", "{table}", {}),
    ("[s3] list a partition of the table", "s3:ListBucket", "{bucket}", {"s3:prefix": "records/date=2026-12-02/hour=07/"}),
    ("[s3] read a record", "s3:GetObject", "{bucket}/records/date=2026-12-02/hour=07/0a1b2c3d.json", {}),
    ("[s3] locate the bucket", "s3:GetBucketLocation", "{bucket}", {}),
    ("[s3] write a query's results", "s3:PutObject", "{bucket}/athena-results/4f0c.csv", {}),
    ("[s3] write their metadata", "s3:PutObject", "{bucket}/athena-results/4f0c.csv.metadata", {}),
    ("[s3] read the results", "s3:GetObject", "{bucket}/athena-results/4f0c.csv", {}),
    ("[s3] list the results", "s3:ListBucket", "{bucket}", {"s3:prefix": "athena-results/"}),
    ("[s3] a large result's parts", "s3:ListMultipartUploadParts", "{bucket}/athena-results/4f0c.csv", {}),
    ("[s3] abandon a large result", "s3:AbortMultipartUpload", "{bucket}/athena-results/4f0c.csv", {}),
    ("[s3] the results' uploads", "s3:ListBucketMultipartUploads", "{bucket}", {}),
    ("[encrypted] decrypt the records and results", "kms:Decrypt", "{key}", {"kms:ViaService": "s3.{region}.amazonaws.com"}),
    ("[encrypted] data keys for the results", "kms:GenerateDataKey", "{key}", {"kms:ViaService": "s3.{region}.amazonaws.com"}),
]
REFUSED = [
    ("records are the teacher's to write", "s3:PutObject", "{bucket}/records/date=2026-12-02/hour=07/0a1b2c3d.json", {}),
    ("nothing is deleted (the lifecycle does it)", "s3:DeleteObject", "{bucket}/records/date=2026-12-02/hour=07/x.json", {}),
    ("results expire, not deleted by hand", "s3:DeleteObject", "{bucket}/athena-results/4f0c.csv", {}),
    ("the teacher's failed events are not a dataset", "s3:GetObject", "{bucket}/aws/lambda/async/teacher/2026/12/02/x", {}),
    ("nor listed", "s3:ListBucket", "{bucket}", {"s3:prefix": "aws/lambda/async/"}),
    ("nor the whole bucket", "s3:ListBucket", "{bucket}", {}),
    ("the server access logs' bucket neither", "s3:GetObject", "arn:aws:s3:::another-bucket/captured/x", {}),
    ("the key only through S3", "kms:Decrypt", "{key}", {}),
    ("not through another service", "kms:Decrypt", "{key}", {"kms:ViaService": "sqs.{region}.amazonaws.com"}),
    ("no key administration", "kms:ScheduleKeyDeletion", "{key}", {"kms:ViaService": "s3.{region}.amazonaws.com"}),
    ("no plaintext data keys of its own", "kms:GenerateDataKeyWithoutPlaintext", "{key}", {"kms:ViaService": "s3.{region}.amazonaws.com"}),
    ("no other workgroup", "athena:StartQueryExecution", "arn:aws:athena:{region}:{account}:workgroup/primary", {}),
    ("no change to the workgroup", "athena:UpdateWorkGroup", "{workgroup}", {}),
    ("nor its deletion", "athena:DeleteWorkGroup", "{workgroup}", {}),
    ("no other database's tables", "glue:GetTable", "arn:aws:glue:{region}:{account}:table/other_db/x", {}),
    ("no table written", "glue:UpdateTable", "{table}", {}),
    ("no table created", "glue:CreateTable", "{database}", {}),
    ("no partition added (projection computes them)", "glue:BatchCreatePartition", "{table}", {}),
]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Resolver:
    """Template values as the deployed stack would have them (this account, BUCKET, the key's ARN)."""

    def __init__(self, template: dict[str, Any], region: str) -> None:
        self.resources, self.region = template["Resources"], region
        self.key_arn = f"arn:aws:kms:{region}:{ACCOUNT}:key/{KEY_ID}"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return [self(item) for item in value]
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(self(part) for part in parts)
        if "Ref" in value:
            return self._ref(value["Ref"])
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            kind = self.resources[logical_id]["Type"]
            assert attribute == "Arn", value
            return {"AWS::S3::Bucket": f"arn:aws:s3:::{BUCKET}", "AWS::KMS::Key": self.key_arn}[kind]
        raise AssertionError(f"a template value this test does not resolve: {value}")

    def statement(self, statement: dict[str, Any]) -> dict[str, Any]:
        resolved = {**statement, "Resource": self(statement["Resource"])}
        if "Principal" in statement:
            resolved["Principal"] = {kind: self(who) for kind, who in statement["Principal"].items()}
        return resolved

    def _ref(self, name: str) -> str:
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::Region": self.region}
        if name in pseudo:
            return pseudo[name]
        resource = self.resources[name]
        props = resource["Properties"]
        return {
            "AWS::S3::Bucket": lambda: BUCKET,
            "AWS::Athena::WorkGroup": lambda: props["Name"],
            "AWS::Glue::Database": lambda: props["DatabaseInput"]["Name"],
            "AWS::Glue::Table": lambda: props["TableInput"]["Name"],
        }[resource["Type"]]()


def _matches(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement  # not modelled here
    if not any(fnmatchcase(action.lower(), pattern.lower()) for pattern in _listed(statement["Action"])):
        return False
    if not any(fnmatchcase(resource, pattern) for pattern in _listed(statement["Resource"])):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        for key, expected in conditions.items():
            value = context.get(key)
            if value is None:  # a condition on a key the request lacks does not match
                return False
            if operator == "StringEquals":
                matched = value in _listed(expected)
            elif operator == "StringLike":
                matched = any(fnmatchcase(value, pattern) for pattern in _listed(expected))
            else:
                raise AssertionError(f"a condition operator this test does not model: {operator}")
            if not matched:
                return False
    return True


def allowed(statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's evaluation within one policy: an explicit Deny wins, else any Allow, else the implicit deny."""
    if any(_matches(s, action, resource, context) for s in statements if s["Effect"] == "Deny"):
        return False
    return any(_matches(s, action, resource, context) for s in statements if s["Effect"] == "Allow")


@pytest.fixture(params=CAPTURING)
def access(request, synthesized) -> dict[str, Any]:
    stage = synthesized.stages[request.param]
    template = stage.templates["Capture"]
    resolve = Resolver(template, stage.config.region)
    (policy_id, policy), = [(k, r) for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    (key,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    (workgroup,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Athena::WorkGroup"]
    (database,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Glue::Database"]
    (table,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Glue::Table"]
    region, db = stage.config.region, database["Properties"]["DatabaseInput"]["Name"]
    names = {
        "region": region, "account": ACCOUNT, "bucket": f"arn:aws:s3:::{BUCKET}", "key": resolve.key_arn,
        "workgroup": f"arn:aws:athena:{region}:{ACCOUNT}:workgroup/{workgroup['Properties']['Name']}",
        "datacatalog": f"arn:aws:athena:{region}:{ACCOUNT}:datacatalog/AwsDataCatalog",
        "catalog": f"arn:aws:glue:{region}:{ACCOUNT}:catalog",
        "database": f"arn:aws:glue:{region}:{ACCOUNT}:database/{db}",
        "table": f"arn:aws:glue:{region}:{ACCOUNT}:table/{db}/{table['Properties']['TableInput']['Name']}",
    }  # fmt: skip
    return {
        "template": template,
        "policy_id": policy_id,
        "statements": [resolve.statement(s) for s in policy["Properties"]["PolicyDocument"]["Statement"]],
        "key_statements": [resolve.statement(s) for s in key["Properties"]["KeyPolicy"]["Statement"]],
        "workgroup": workgroup,
        "fill": lambda text: text.format(**names),
        "context": lambda context: {k: v.format(**names) for k, v in context.items()},
    }


@pytest.mark.parametrize(("need", "action", "resource", "context"), REQUIRED, ids=[row[0] for row in REQUIRED])
def test_the_analysts_policy_grants_what_aws_documents_for_the_query(access, need, action, resource, context):
    assert allowed(access["statements"], action, access["fill"](resource), access["context"](context)), need


@pytest.mark.parametrize(("why", "action", "resource", "context"), REFUSED, ids=[row[0] for row in REFUSED])
def test_the_analysts_policy_grants_nothing_more(access, why, action, resource, context):
    assert not allowed(access["statements"], action, access["fill"](resource), access["context"](context)), why


@pytest.mark.parametrize(("need", "action", "resource", "context"),
                         [row for row in REQUIRED if row[1].startswith("kms:")], ids=["decrypt", "data keys"])
def test_the_key_policy_lets_the_accounts_iam_policies_grant_its_use(access, need, action, resource, context):
    """[key policy]: the account's own statement is what gives an IAM policy's Allow on the key its effect;
    no other principal is given the key by its policy."""
    account_root = f"arn:aws:iam::{ACCOUNT}:root"
    delegating = [s for s in access["key_statements"] if s.get("Principal") == {"AWS": account_root}]
    assert allowed(delegating, action, access["fill"](resource), access["context"](context)), need
    others = [s for s in access["key_statements"] if s.get("Principal") != {"AWS": account_root}]
    assert not [s for s in others if s["Effect"] == "Allow" and _matches(s, action, access["fill"](resource), access["context"](context))]
    assert not [s for s in access["key_statements"] if s["Effect"] == "Deny"]  # nothing that would override it


def test_the_results_the_policy_lets_analysts_write_are_where_the_workgroup_puts_them(access):
    configuration = access["workgroup"]["Properties"]["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True  # a client cannot send results elsewhere
    location = Resolver(access["template"], "any")(configuration["ResultConfiguration"]["OutputLocation"])
    assert location == f"s3://{BUCKET}/{ATHENA_RESULTS_PREFIX}"
    table_location = [r for r in access["template"]["Resources"].values() if r["Type"] == "AWS::Glue::Table"][0]
    storage = Resolver(access["template"], "any")(table_location["Properties"]["TableInput"]["StorageDescriptor"]["Location"])
    assert storage == f"s3://{BUCKET}/{RECORDS_PREFIX}"


def test_the_stack_outputs_the_policys_arn_for_analysts_to_attach(access):
    assert access["template"]["Outputs"]["AnalystPolicyArn"]["Value"] == {"Ref": access["policy_id"]}
