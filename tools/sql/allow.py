"""The allowlists behind the SQL guard: which syntax, functions and types a query may use.

Data only, kept apart from the walker so a reviewer can read the whole policy on one page.
Everything not named here is refused; nothing is refused by being named. Names are
sqlglot expression classes (resolved in ``_sql_guard``, which fails at import if one
disappears in a sqlglot upgrade) or, for functions sqlglot does not model, lower-case
SQL names per dialect.
"""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    """The whitespace-separated names in ``text``."""
    return frozenset(text.split())


# Query structure: set operations, clauses, joins, windows, literals, references.
STRUCTURE = words(
    """
Select Union Intersect Except Subquery With CTE TableAlias From Join Where Group Having
Qualify Order Ordered Limit Offset Fetch LimitOptions Distinct Window WindowSpec Table Column
Identifier Star Alias Literal Null Boolean Paren Tuple Values Var Filter WithinGroup
IgnoreNulls RespectNulls Collate
"""
)

# Operators and predicates.
OPERATORS = words(
    """
EQ NEQ GT GTE LT LTE NullSafeEQ NullSafeNEQ And Or Not Neg Add Sub Mul Div IntDiv Mod DPipe
Is In Between Like ILike Glob Escape RegexpLike RegexpILike Exists Any All
Case If Cast TryCast DataType DataTypeParam Interval Coalesce Nullif Greatest Least
"""
)

# Functions sqlglot models as their own classes: aggregates, math, strings, dates, windows.
FUNCTIONS = words(
    """
Count Sum Avg Min Max Stddev StddevPop StddevSamp Variance VariancePop Median Quantile
PercentileCont PercentileDisc ApproxDistinct GroupConcat CountIf Corr CovarPop CovarSamp
ArrayAgg AnyValue LogicalAnd LogicalOr ArgMax ArgMin
Abs Round Floor Ceil Sqrt Pow Exp Ln Log Sign Trunc Pi
Upper Lower Length Substring Trim Concat ConcatWs Replace StrPosition Left Right Initcap
Reverse RegexpExtract RegexpReplace SplitPart Chr Ascii Unicode Contains StartsWith EndsWith
Typeof
CurrentDate CurrentTimestamp CurrentTime DateTrunc TimestampTrunc Extract DateAdd DateSub
DateDiff TsOrDsAdd TsOrDsDiff TsOrDsToDate TsOrDsToTimestamp TimeToStr StrToTime StrToDate
Year Month Day Quarter Week DayOfWeek DayOfMonth DayOfYear DayOfWeekIso WeekOfYear Date
DateStrToDate TimeStrToTime UnixToTime TimeToUnix LastDay DateFromParts Datetime
TimestampAdd TimestampSub TimestampDiff ToChar Hour Minute Second
RowNumber Rank DenseRank PercentRank CumeDist Ntile Lag Lead FirstValue LastValue NthValue
"""
)

# Functions sqlglot leaves as `Anonymous` calls, per dialect (lower-case). Only pure
# scalar helpers an analyst uses; no file, network, settings, sleep or catalog function,
# and nothing that builds a huge value from a small query (repeat, lpad/rpad, zeroblob).
ANONYMOUS_FUNCTIONS: dict[str, frozenset[str]] = {
    "sqlite": words(
        """
        date time datetime julianday unixepoch total printf format instr ifnull iif
        char hex quote likely unlikely mod ltrim rtrim
        """
    ),
    "duckdb": words(
        """
        date_part datepart datediff date_diff date_add make_date make_timestamp epoch
        dayname monthname now strptime yearweek isodow isoyear last_day len ord lcase
        ucase mode
        """
    ),
    "postgres": words(
        """
        age make_date make_timestamp date_part justify_days justify_interval justify_hours
        to_number now isfinite width_bucket btrim ltrim rtrim translate
        char_length octet_length num_nonnulls num_nulls mode
        """
    ),
}

# Cast targets: plain scalar types only (no regclass/oid lookups, no json/xml parsers).
DATA_TYPES = words(
    """
    TINYINT SMALLINT INT BIGINT UTINYINT USMALLINT UINT UBIGINT INT128 FLOAT DOUBLE DECIMAL
    BOOLEAN CHAR BPCHAR NCHAR VARCHAR NVARCHAR TEXT DATE TIME TIMETZ TIMESTAMP TIMESTAMPTZ
    TIMESTAMPLTZ TIMESTAMPNTZ DATETIME INTERVAL
    """
)

# The expression arguments a table reference may carry: a plain name, an optional schema
# qualifier and an alias. Anything else (table functions, time travel, sampling, hints)
# is refused.
TABLE_ARGS = frozenset({"this", "db", "alias"})
