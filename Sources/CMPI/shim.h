// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) are macros over addresses of global objects, which
// Swift cannot import; these accessors hand them to Swift as ordinary values.
#include <mpi.h>

static inline MPI_Comm ocr_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype ocr_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype ocr_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype ocr_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype ocr_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype ocr_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op ocr_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op ocr_mpi_max(void) { return MPI_MAX; }
static inline MPI_Op ocr_mpi_min(void) { return MPI_MIN; }
static inline int ocr_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }
static inline int ocr_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int ocr_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int ocr_mpi_success(void) { return MPI_SUCCESS; }
static inline void *ocr_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *ocr_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Request ocr_mpi_request_null(void) { return MPI_REQUEST_NULL; }
static inline int ocr_mpi_any_source(void) { return MPI_ANY_SOURCE; }
static inline int ocr_status_source(const MPI_Status *s) { return s->MPI_SOURCE; }
static inline int ocr_mpi_comm_type_shared(void) { return MPI_COMM_TYPE_SHARED; }
static inline MPI_Info ocr_mpi_info_null(void) { return MPI_INFO_NULL; }
