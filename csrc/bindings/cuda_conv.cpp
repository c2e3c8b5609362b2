#include "cuda_bind.h"

namespace pyfastcnn {
namespace cuda {

void bind_conv_ops(pybind11::module_& /*m*/) {}

}  // namespace cuda
}  // namespace pyfastcnn
