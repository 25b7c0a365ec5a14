//! Arrow tables handed to Python through the Arrow PyCapsule interface (`__arrow_c_stream__`):
//! pyarrow, polars and pandas read the buffers built here without copying them.

use std::ffi::CStr;
use std::sync::Arc;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchIterator};
use arrow_schema::{ArrowError, Field, Schema};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// The capsule name the Arrow PyCapsule interface gives a stream.
const STREAM_CAPSULE: &CStr = c"arrow_array_stream";

/// One record batch, exported once as an Arrow C stream (`pyarrow.table(stream)` reads it).
#[pyclass(module = "evalloop._evalloop", frozen)]
pub struct ArrowStream {
    batch: RecordBatch,
}

impl ArrowStream {
    /// A table of `columns` (name, nullable, array), all of one length.
    pub fn new(columns: Vec<(&str, bool, ArrayRef)>) -> PyResult<ArrowStream> {
        let fields: Vec<Field> =
            columns.iter().map(|(name, nullable, a)| Field::new(*name, a.data_type().clone(), *nullable)).collect();
        let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, _, a)| a).collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| crate::input_err(format!("building the Arrow table: {e}")))?;
        Ok(ArrowStream { batch })
    }
}

#[pymethods]
impl ArrowStream {
    /// The table as an Arrow C stream in a PyCapsule (the Arrow PyCapsule interface); a
    /// `requested_schema` is not supported and is ignored, as the interface allows.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let schema = self.batch.schema();
        let reader = RecordBatchIterator::new(vec![Ok::<_, ArrowError>(self.batch.clone())], schema);
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM_CAPSULE)
    }

    /// Rows in the table.
    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }
}
