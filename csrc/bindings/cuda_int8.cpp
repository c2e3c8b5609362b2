#include "cuda_bind.h"

namespace pyfastcnn {
namespace cuda {

void bind_int8_ops(pybind11::module_& /*m*/) {}

}  // namespace cuda
}  // namespace pyfastcnn
