//! What passes between the desk and either database: a parameter or a column is one of
//! SQLite's five storage classes, which PostgreSQL's columns are read into and its parameters
//! written from, whatever type the server infers for them.

use super::SqlError;

/// One parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (SQLite INTEGER; PostgreSQL BIGINT, INTEGER, SMALLINT or BOOLEAN).
    Int(i64),
    /// A floating-point number (REAL; DOUBLE PRECISION, or a NUMERIC with a fraction).
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes (BLOB; BYTEA).
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real number",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A Rust value that can be a query's parameter.
pub trait ToValue {
    /// The value, as bound.
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                // Counts and sizes far below i64::MAX; one beyond it is kept at the limit.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
integers!(i64, i32, u32, u64, usize);

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(value) => value.to_value(),
            None => Value::Null,
        }
    }
}

/// A Rust value a column can be read as.
pub trait FromValue: Sized {
    /// The column's value as `Self`, or what was there instead.
    fn from_value(value: &Value) -> Result<Self, &'static str>;
}

impl FromValue for Value {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        Ok(value.clone())
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Text(text) => Ok(text.clone()),
            other => Err(other.kind()),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Blob(bytes) => Ok(bytes.clone()),
            Value::Text(text) => Ok(text.as_bytes().to_vec()),
            other => Err(other.kind()),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Int(i) => Ok(*i != 0),
            other => Err(other.kind()),
        }
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Real(f) => Ok(*f),
            // SQLite keeps a REAL that is a whole number as one; PostgreSQL's AVG is NUMERIC.
            Value::Int(i) => Ok(*i as f64),
            other => Err(other.kind()),
        }
    }
}

macro_rules! read_integers {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Result<Self, &'static str> {
                match value {
                    Value::Int(i) => <$t>::try_from(*i).map_err(|_| "an integer out of range"),
                    other => Err(other.kind()),
                }
            }
        }
    )*};
}
read_integers!(i64, i32, u32, u64, usize);

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Result<Self, &'static str> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row of a query's result, read whole.
#[derive(Debug, Clone)]
pub struct Row {
    pub(super) values: Vec<Value>,
}

impl Row {
    /// Column `index` (from 0) as `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, SqlError> {
        let value = self.values.get(index).ok_or(SqlError::Column {
            index,
            found: "no such column",
            expected: std::any::type_name::<T>(),
        })?;
        T::from_value(value).map_err(|found| SqlError::Column {
            index,
            found,
            expected: std::any::type_name::<T>(),
        })
    }
}

/// A query's parameters: `params![a, b]` is `&[Value]` of each, taken by reference.
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::db::Value] };
    ($($param:expr),+ $(,)?) => {
        &[$($crate::db::ToValue::to_value(&$param)),+] as &[$crate::db::Value]
    };
}
