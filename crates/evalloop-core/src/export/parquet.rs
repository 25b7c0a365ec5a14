//! Parquet files of the export rows, through the Apache Arrow crates: one record batch of the
//! rows' columns, Snappy-compressed, as `datasets.load_dataset("parquet")` and pandas read them.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::rows::{Column, Message};
use crate::{Error, Result};

/// The fields of a chat message, in the order the JSON lines write them (sorted).
fn message_fields() -> Fields {
    Fields::from(vec![Field::new("content", DataType::Utf8, false), Field::new("role", DataType::Utf8, false)])
}

/// `messages`: a list of `{content, role}` structs per row.
fn messages_array(rows: &[Vec<Message>]) -> Result<ArrayRef> {
    let contents = StringArray::from_iter_values(rows.iter().flatten().map(|m| m.content.as_str()));
    let roles = StringArray::from_iter_values(rows.iter().flatten().map(|m| m.role.as_str()));
    let items = StructArray::try_new(message_fields(), vec![Arc::new(contents), Arc::new(roles)], None)
        .map_err(|e| Error::Internal(format!("building the messages column: {e}")))?;
    let item = Arc::new(Field::new_list_field(DataType::Struct(message_fields()), false));
    let offsets = OffsetBuffer::<i32>::from_lengths(rows.iter().map(Vec::len));
    let list = ListArray::try_new(item, offsets, Arc::new(items), None)
        .map_err(|e| Error::Internal(format!("building the messages column: {e}")))?;
    Ok(Arc::new(list))
}

/// The columns as the bytes of one Parquet file.
pub(super) fn encode(columns: Vec<(&'static str, Column)>) -> Result<Vec<u8>> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (name, column) in columns {
        let (data_type, array): (DataType, ArrayRef) = match column {
            Column::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v))),
            Column::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v))),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v))),
            Column::Messages(v) => {
                let item = Field::new_list_field(DataType::Struct(message_fields()), false);
                (DataType::List(Arc::new(item)), messages_array(&v)?)
            }
        };
        fields.push(Field::new(name, data_type, false));
        arrays.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| Error::Internal(format!("building the Parquet record batch: {e}")))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props))
        .map_err(|e| Error::Internal(format!("starting the Parquet file: {e}")))?;
    w.write(&batch).map_err(|e| Error::Internal(format!("writing Parquet rows: {e}")))?;
    w.close().map_err(|e| Error::Internal(format!("closing the Parquet file: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// What is written reads back, column for column, with the types TRL's loaders expect.
    #[test]
    fn columns_round_trip_through_parquet() {
        let messages = vec![
            vec![
                Message { role: "user".into(), content: "Hi \u{1F600}".into() },
                Message { role: "assistant".into(), content: "Hello.".into() },
            ],
            vec![Message { role: "user".into(), content: String::new() }],
        ];
        let bytes = encode(vec![
            ("prompt", Column::Text(vec!["a".into(), "b\nc".into()])),
            ("label", Column::Bool(vec![true, false])),
            ("weight", Column::Float(vec![0.5, 2.0])),
            ("messages", Column::Messages(messages)),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        let s = b.schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["prompt", "label", "weight", "messages"]);
        let prompt = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(prompt.value(1), "b\nc");
        let label = b.column(1).as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!(label.value(0) && !label.value(1));
        let weight = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!(weight.value(1), 2.0);
        let list = b.column(3).as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!((list.value_length(0), list.value_length(1)), (2, 1));
        let first = list.value(0);
        let items = first.as_any().downcast_ref::<StructArray>().unwrap();
        let content = items.column_by_name("content").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        let role = items.column_by_name("role").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((role.value(0), content.value(0)), ("user", "Hi \u{1F600}"));
        assert_eq!((role.value(1), content.value(1)), ("assistant", "Hello."));
    }
}
